//! `podlet-runc events`: stats and OOM events as JSON lines, like runc's.

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Result};
use podlet_runtime::container::Runtime;
use podlet_runtime::state::Status;
use serde_json::json;

/// Parses a Go-style duration: `5s`, `100ms`, `1m`, `2h`.
pub fn parse_interval(s: &str) -> Result<Duration> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: f64 = match num.parse() {
        Ok(n) if n > 0.0 => n,
        _ => bail!("--interval {s:?}: expected a positive duration like 5s or 500ms"),
    };
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => bail!("--interval {s:?}: unknown unit {unit:?} (ms, s, m, h)"),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn emit(ev: serde_json::Value) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{ev}")?;
    out.flush()?;
    Ok(())
}

/// Prints one stats event (`--stats`), or streams stats every `interval` plus an `oom` event
/// whenever the OOM-kill count grows, until the container stops.
pub fn run(rt: &Runtime, id: &str, stats_once: bool, interval: Duration) -> Result<()> {
    if stats_once {
        return emit(json!({"type": "stats", "id": id, "data": rt.stats(id)?}));
    }
    let mut ooms = rt.oom_kills(id)?;
    let tick = Duration::from_millis(100).min(interval);
    let mut waited = Duration::ZERO;
    loop {
        let st = rt.state(id)?;
        if st.status == Status::Stopped {
            return Ok(());
        }
        let now = rt.oom_kills(id).unwrap_or(ooms);
        if now > ooms {
            emit(json!({"type": "oom", "id": id}))?;
            ooms = now;
        }
        if waited >= interval {
            waited = Duration::ZERO;
            if let Ok(data) = rt.stats(id) {
                emit(json!({"type": "stats", "id": id, "data": data}))?;
            }
        }
        std::thread::sleep(tick);
        waited += tick;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_parse() {
        assert_eq!(parse_interval("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_interval("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_interval("2").unwrap(), Duration::from_secs(2));
        assert!(parse_interval("0s").is_err());
        assert!(parse_interval("3y").is_err());
    }
}
