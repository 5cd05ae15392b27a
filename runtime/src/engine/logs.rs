//! Reading the CRI-format container logs the monitor writes:
//! `<RFC 3339 time> <stdout|stderr> <F|P> <text>` per line (`P`: a partial line continues).

/// One parsed log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry<'a> {
    /// When the monitor read it (RFC 3339).
    pub time: &'a str,
    /// True for stderr.
    pub stderr: bool,
    /// True when the line continues in the next entry (no newline in the output).
    pub partial: bool,
    /// The output, without the newline.
    pub text: &'a [u8],
}

/// Parses one line of a CRI log (without its trailing newline); `None` if malformed.
pub fn parse_line(line: &[u8]) -> Option<LogEntry<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let stderr = match parts.next()? {
        b"stdout" => false,
        b"stderr" => true,
        _ => return None,
    };
    let partial = match parts.next()? {
        b"F" => false,
        b"P" => true,
        _ => return None,
    };
    Some(LogEntry {
        time,
        stderr,
        partial,
        text: parts.next().unwrap_or(b""),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_partial_and_malformed_lines() {
        let e = parse_line(b"2026-01-01T00:00:00Z stdout F hello world").unwrap();
        assert_eq!(e.time, "2026-01-01T00:00:00Z");
        assert!(!e.stderr && !e.partial);
        assert_eq!(e.text, b"hello world");
        let e = parse_line(b"2026-01-01T00:00:00Z stderr P ").unwrap();
        assert!(e.stderr && e.partial && e.text.is_empty());
        assert!(parse_line(b"2026-01-01T00:00:00Z stdin F x").is_none());
        assert!(parse_line(b"garbage").is_none());
    }
}
