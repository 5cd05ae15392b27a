//! `podlet-runc --log FILE --log-format json|text` in runc's own shapes (logrus), so tools that
//! read a runtime's log to report its last error (containerd's go-runc, CRI-O, podman) find
//! the message where runc puts it:
//! `{"level":"error","msg":"…","time":"2026-11-30T12:00:00.123456789Z"}`, or in text
//! `time="…" level=error msg="…"`. Other fields of an event become keys of their own.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;

/// runc's log line format.
#[derive(Debug, Clone, Copy)]
pub struct RuncFormat {
    /// `--log-format json` (else text).
    pub json: bool,
}

#[derive(Default)]
struct Fields {
    msg: String,
    rest: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.msg = value.to_string();
        } else {
            self.rest
                .push((field.name().to_string(), value.to_string()));
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.msg = format!("{value:?}");
        } else {
            self.rest
                .push((field.name().to_string(), format!("{value:?}")));
        }
    }
}

/// logrus's level names.
fn level_name(l: &Level) -> &'static str {
    match *l {
        Level::ERROR => "error",
        Level::WARN => "warning",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

/// The current time as RFC 3339 with nanoseconds, UTC (logrus's `RFC3339Nano`).
fn now_rfc3339() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    podlet_runtime::container::format_rfc3339(d.as_secs() as i64, Some(d.subsec_nanos()))
}

/// One line for an event with `level` and `fields` at `time`.
fn line(json: bool, level: &Level, fields: &Fields, time: &str) -> String {
    if json {
        let mut m = serde_json::Map::new();
        for (k, v) in &fields.rest {
            m.insert(k.clone(), serde_json::Value::String(v.clone()));
        }
        m.insert("level".into(), level_name(level).into());
        m.insert("msg".into(), fields.msg.clone().into());
        m.insert("time".into(), time.into());
        serde_json::Value::Object(m).to_string()
    } else {
        let q = |s: &str| serde_json::Value::String(s.to_string()).to_string();
        let mut out = format!(
            "time={} level={} msg={}",
            q(time),
            level_name(level),
            q(&fields.msg)
        );
        for (k, v) in &fields.rest {
            let _ = write!(out, " {k}={}", q(v));
        }
        out
    }
}

impl<S, N> FormatEvent<S, N> for RuncFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        writeln!(
            writer,
            "{}",
            line(self.json, event.metadata().level(), &fields, &now_rfc3339())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_have_runcs_shape() {
        let f = Fields {
            msg: "container \"x\" does not exist".into(),
            rest: vec![("id".into(), "x".into())],
        };
        let j: serde_json::Value =
            serde_json::from_str(&line(true, &Level::ERROR, &f, "2026-11-30T00:00:00Z")).unwrap();
        assert_eq!(j["level"], "error");
        assert_eq!(j["msg"], "container \"x\" does not exist");
        assert_eq!(j["time"], "2026-11-30T00:00:00Z");
        assert_eq!(j["id"], "x");
        assert_eq!(
            line(false, &Level::WARN, &f, "T"),
            "time=\"T\" level=warning msg=\"container \\\"x\\\" does not exist\" id=\"x\""
        );
        let t = now_rfc3339();
        assert_eq!(t.len(), 30, "{t}");
        assert!(
            t.starts_with("20") && t.ends_with('Z') && &t[10..11] == "T",
            "{t}"
        );
    }
}
