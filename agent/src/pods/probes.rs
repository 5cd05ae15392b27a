//! Liveness, readiness and startup probes with Kubernetes' fields and defaults: `exec` (a
//! process in the container, success on exit 0), `httpGet` (a 2xx/3xx answer), `tcpSocket`
//! (a connection) and `grpc` (checked as a connection to its port).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use podlet_runtime::engine::{Engine, ExecRequest};

/// One probe's bookkeeping for one container run.
#[derive(Debug, Clone, Default)]
pub struct ProbeState {
    /// When it last ran.
    pub last: Option<Instant>,
    /// Consecutive successes.
    pub successes: i32,
    /// Consecutive failures.
    pub failures: i32,
    /// The current verdict (`None` before the first one counts).
    pub verdict: Option<bool>,
}

/// The probe's settings with Kubernetes' defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// `initialDelaySeconds` (0).
    pub initial_delay: Duration,
    /// `periodSeconds` (10).
    pub period: Duration,
    /// `timeoutSeconds` (1).
    pub timeout: Duration,
    /// `successThreshold` (1).
    pub success_threshold: i32,
    /// `failureThreshold` (3).
    pub failure_threshold: i32,
}

/// The timing of `p`.
pub fn timing(p: &Probe) -> Timing {
    let secs =
        |v: Option<i32>, d: u64| Duration::from_secs(v.map(|v| v.max(0) as u64).unwrap_or(d));
    Timing {
        initial_delay: secs(p.initial_delay_seconds, 0),
        period: secs(p.period_seconds, 10).max(Duration::from_secs(1)),
        timeout: secs(p.timeout_seconds, 1).max(Duration::from_secs(1)),
        success_threshold: p.success_threshold.unwrap_or(1).max(1),
        failure_threshold: p.failure_threshold.unwrap_or(3).max(1),
    }
}

impl ProbeState {
    /// Whether the probe is due, for a container started at `started`.
    pub fn due(&self, t: &Timing, started: Instant, now: Instant) -> bool {
        now >= started + t.initial_delay && self.last.is_none_or(|l| now >= l + t.period)
    }

    /// Counts one result; returns the verdict once a threshold is crossed.
    pub fn record(&mut self, t: &Timing, ok: bool, now: Instant) -> Option<bool> {
        self.last = Some(now);
        if ok {
            self.successes += 1;
            self.failures = 0;
            if self.successes >= t.success_threshold {
                self.verdict = Some(true);
            }
        } else {
            self.failures += 1;
            self.successes = 0;
            if self.failures >= t.failure_threshold {
                self.verdict = Some(false);
            }
        }
        self.verdict
    }
}

fn port_of(p: &IntOrString, c: &Container) -> Option<u16> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name.as_str()))
            .and_then(|cp| u16::try_from(cp.container_port).ok())
            .or_else(|| name.parse().ok()),
    }
}

fn connect(host: &str, port: u16, timeout: Duration) -> Option<TcpStream> {
    let addr: SocketAddr = (host, port).to_socket_addrs().ok()?.next()?;
    let s = TcpStream::connect_timeout(&addr, timeout).ok()?;
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    Some(s)
}

/// An HTTP GET of `path` on `host:port`; success on a 2xx or 3xx status.
pub fn http_get(host: &str, port: u16, path: &str, timeout: Duration) -> bool {
    let Some(mut s) = connect(host, port, timeout) else {
        return false;
    };
    let path = if path.is_empty() { "/" } else { path };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.36\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        match s.read(&mut head[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    let line = String::from_utf8_lossy(&head[..got]);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .is_some_and(|c| (200..400).contains(&c))
}

/// Runs `args` in container `id`, waiting at most `timeout`; success on exit 0.
pub fn exec(engine: &Engine, id: &str, args: &[String], timeout: Duration) -> bool {
    let req = ExecRequest {
        args: args.to_vec(),
        quiet: true,
        ..ExecRequest::default()
    };
    let Ok(pid) = engine.exec(id, &req) else {
        return false;
    };
    let pid = nix::unistd::Pid::from_raw(pid);
    let deadline = Instant::now() + timeout;
    loop {
        match nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => return code == 0,
            Ok(nix::sys::wait::WaitStatus::StillAlive) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(nix::sys::wait::WaitStatus::StillAlive) => {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(pid, None);
                return false;
            }
            Ok(_) => continue,
            Err(_) => return false,
        }
    }
}

/// Runs probe `p` once against container `c` (engine name `id`) at `pod_ip`.
pub fn run(engine: &Engine, p: &Probe, c: &Container, id: &str, pod_ip: &str) -> bool {
    let t = timing(p);
    if let Some(e) = &p.exec {
        return exec(
            engine,
            id,
            e.command.as_deref().unwrap_or_default(),
            t.timeout,
        );
    }
    if let Some(h) = &p.http_get {
        let host = h
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| pod_ip.to_string());
        return port_of(&h.port, c).is_some_and(|port| {
            http_get(&host, port, h.path.as_deref().unwrap_or("/"), t.timeout)
        });
    }
    if let Some(s) = &p.tcp_socket {
        let host = s
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| pod_ip.to_string());
        return port_of(&s.port, c).is_some_and(|port| connect(&host, port, t.timeout).is_some());
    }
    if let Some(g) = &p.grpc {
        return u16::try_from(g.port)
            .ok()
            .is_some_and(|port| connect(pod_ip, port, t.timeout).is_some());
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_thresholds() {
        let p: Probe = serde_json::from_value(serde_json::json!({"failureThreshold": 2})).unwrap();
        let t = timing(&p);
        assert_eq!(t.period, Duration::from_secs(10));
        assert_eq!(t.timeout, Duration::from_secs(1));
        let mut s = ProbeState::default();
        let now = Instant::now();
        assert!(s.due(&t, now, now));
        assert_eq!(s.record(&t, false, now), None);
        assert!(!s.due(&t, now, now + Duration::from_secs(5)));
        assert_eq!(s.record(&t, false, now), Some(false));
        assert_eq!(s.record(&t, true, now), Some(true));
    }

    #[test]
    fn http_and_tcp_probes_against_a_real_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for (i, s) in l.incoming().take(2).enumerate() {
                let mut s = s.unwrap();
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf);
                let status = if i == 0 { "200 OK" } else { "500 Oops" };
                let _ = s.write_all(
                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes(),
                );
            }
        });
        let t = Duration::from_secs(2);
        assert!(http_get("127.0.0.1", port, "/healthz", t));
        assert!(!http_get("127.0.0.1", port, "/healthz", t));
        server.join().unwrap();
        assert!(connect("127.0.0.1", port, t).is_none(), "listener closed");
    }
}
