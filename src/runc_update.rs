//! `podlet-runc update`: resource limits from `--resources` JSON and runc's individual flags.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use oci_spec::runtime::LinuxResources;
use serde_json::{json, Map, Value};

/// runc's `update` flags.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// A JSON file with linux.resources ("-" for stdin).
    #[arg(long, short)]
    pub resources: Option<PathBuf>,
    /// Block IO weight (10-1000).
    #[arg(long)]
    pub blkio_weight: Option<u16>,
    /// CPU CFS period in microseconds.
    #[arg(long)]
    pub cpu_period: Option<u64>,
    /// CPU CFS quota in microseconds (-1 for none).
    #[arg(long, allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    /// CPU shares (relative weight).
    #[arg(long)]
    pub cpu_share: Option<u64>,
    /// CPUs allowed (e.g. 0-1).
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes allowed.
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    /// Memory limit (bytes, or with k/m/g suffix; -1 for none).
    #[arg(long, allow_hyphen_values = true)]
    pub memory: Option<String>,
    /// Memory soft limit.
    #[arg(long, allow_hyphen_values = true)]
    pub memory_reservation: Option<String>,
    /// Memory plus swap limit (-1 for unlimited swap).
    #[arg(long, allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// Maximum number of pids (-1 or 0 for none).
    #[arg(long, allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
}

/// Parses `64m`, `1G`, `4096`, `-1` into bytes.
pub fn parse_bytes(s: &str) -> Result<i64> {
    let t = s.trim();
    if t == "-1" {
        return Ok(-1);
    }
    let lower = t.to_ascii_lowercase();
    let lower = lower.trim_end_matches('b');
    let (num, mult) = match lower.chars().last() {
        Some('k') => (&lower[..lower.len() - 1], 1i64 << 10),
        Some('m') => (&lower[..lower.len() - 1], 1 << 20),
        Some('g') => (&lower[..lower.len() - 1], 1 << 30),
        Some('t') => (&lower[..lower.len() - 1], 1 << 40),
        _ => (lower, 1),
    };
    let n: f64 = num
        .parse()
        .with_context(|| format!("invalid size {s:?} (expected e.g. 67108864, 64m, 1g)"))?;
    if n < 0.0 {
        bail!("invalid size {s:?}: negative");
    }
    Ok((n * mult as f64) as i64)
}

fn set(obj: &mut Map<String, Value>, section: &str, key: &str, v: Value) {
    let entry = obj.entry(section.to_string()).or_insert_with(|| json!({}));
    if let Some(m) = entry.as_object_mut() {
        m.insert(key.to_string(), v);
    }
}

/// The resources the flags (over the `--resources` document) ask for.
pub fn resources(a: &UpdateArgs) -> Result<LinuxResources> {
    let mut doc: Value = match &a.resources {
        Some(p) => {
            let text = if p.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading resources from stdin")?
            } else {
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
            };
            serde_json::from_str(&text)
                .with_context(|| format!("--resources {}: not valid JSON", p.display()))?
        }
        None => json!({}),
    };
    let Some(obj) = doc.as_object_mut() else {
        bail!("--resources: expected a JSON object (linux.resources)");
    };
    if let Some(w) = a.blkio_weight {
        set(obj, "blockIO", "weight", json!(w));
    }
    if let Some(v) = a.cpu_period {
        set(obj, "cpu", "period", json!(v));
    }
    if let Some(v) = a.cpu_quota {
        set(obj, "cpu", "quota", json!(v));
    }
    if let Some(v) = a.cpu_share {
        set(obj, "cpu", "shares", json!(v));
    }
    if let Some(v) = &a.cpuset_cpus {
        set(obj, "cpu", "cpus", json!(v));
    }
    if let Some(v) = &a.cpuset_mems {
        set(obj, "cpu", "mems", json!(v));
    }
    if let Some(v) = &a.memory {
        set(obj, "memory", "limit", json!(parse_bytes(v)?));
    }
    if let Some(v) = &a.memory_reservation {
        set(obj, "memory", "reservation", json!(parse_bytes(v)?));
    }
    if let Some(v) = &a.memory_swap {
        set(obj, "memory", "swap", json!(parse_bytes(v)?));
    }
    if let Some(v) = a.pids_limit {
        set(obj, "pids", "limit", json!(v));
    }
    serde_json::from_value(doc).context("--resources: not a valid linux.resources object")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_runc() {
        assert_eq!(parse_bytes("64m").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1G").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert_eq!(parse_bytes("-1").unwrap(), -1);
        assert!(parse_bytes("lots")
            .unwrap_err()
            .to_string()
            .contains("lots"));
    }
}
