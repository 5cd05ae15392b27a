//! Resource usage of a container, in the shape `runc events --stats` prints.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde_json::{json, Value};

use super::ContainerCgroups;

fn read_u64(dir: &Path, file: &str) -> Option<u64> {
    let s = fs::read_to_string(dir.join(file)).ok()?;
    let s = s.trim();
    if s == "max" {
        return Some(u64::MAX);
    }
    s.parse().ok()
}

/// `key value` lines (memory.stat, cpu.stat, memory.events) as a map.
pub fn flat_keyed(dir: &Path, file: &str) -> BTreeMap<String, u64> {
    fs::read_to_string(dir.join(file))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// How many times the container's processes were OOM-killed so far.
pub fn oom_kills(cg: &ContainerCgroups) -> u64 {
    if let Some(d) = cg.dir_with("memory.events") {
        return flat_keyed(d, "memory.events")
            .get("oom_kill")
            .copied()
            .unwrap_or(0);
    }
    cg.dir_with("memory.oom_control")
        .map(|d| {
            flat_keyed(d, "memory.oom_control")
                .get("oom_kill")
                .copied()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// CPU, memory and pids usage from whichever hierarchy holds each.
pub fn stats(cg: &ContainerCgroups) -> Value {
    let mut cpu = json!({"usage": {}, "throttling": {}});
    if let Some(d) = cg.dir_with("cpu.stat") {
        let s = flat_keyed(d, "cpu.stat");
        let us = |k: &str| s.get(k).copied().unwrap_or(0) * 1000;
        cpu = json!({
            "usage": {"total": us("usage_usec"), "kernel": us("system_usec"), "user": us("user_usec")},
            "throttling": {
                "periods": s.get("nr_periods").copied().unwrap_or(0),
                "throttledPeriods": s.get("nr_throttled").copied().unwrap_or(0),
                "throttledTime": us("throttled_usec"),
            }
        });
    }
    let mut memory = json!({});
    if let Some(d) = cg.dir_with("memory.current") {
        memory = json!({
            "usage": {
                "usage": read_u64(d, "memory.current").unwrap_or(0),
                "limit": read_u64(d, "memory.max").unwrap_or(u64::MAX),
                "max": read_u64(d, "memory.peak").unwrap_or(0),
                "failcnt": flat_keyed(d, "memory.events").get("max").copied().unwrap_or(0),
            },
            "swap": {
                "usage": read_u64(d, "memory.swap.current").unwrap_or(0),
                "limit": read_u64(d, "memory.swap.max").unwrap_or(u64::MAX),
            },
            "raw": flat_keyed(d, "memory.stat"),
        });
    } else if let Some(d) = cg.dir_with("memory.usage_in_bytes") {
        memory = json!({
            "usage": {
                "usage": read_u64(d, "memory.usage_in_bytes").unwrap_or(0),
                "limit": read_u64(d, "memory.limit_in_bytes").unwrap_or(u64::MAX),
                "max": read_u64(d, "memory.max_usage_in_bytes").unwrap_or(0),
                "failcnt": read_u64(d, "memory.failcnt").unwrap_or(0),
            },
            "raw": flat_keyed(d, "memory.stat"),
        });
    }
    let pids_current = cg
        .dir_with("pids.current")
        .and_then(|d| read_u64(d, "pids.current"))
        .unwrap_or(cg.pids().len() as u64);
    let pids_limit = cg
        .dir_with("pids.max")
        .and_then(|d| read_u64(d, "pids.max"))
        .filter(|l| *l != u64::MAX)
        .unwrap_or(0);
    json!({
        "cpu": cpu,
        "memory": memory,
        "pids": {"current": pids_current, "limit": pids_limit},
        "blkio": {},
        "hugetlb": {},
    })
}
