//! `make bench-dns`: the agent's cluster DNS under load from a pod's network namespace:
//! `dnsperf` (5 s, 8 outstanding queries per client) for queries/s, and a bounded loop of
//! 4 synchronous clients (3 s) for p50/p99 latency, all asking for a Service's A record
//! (`lb.bench.svc.cluster.local`). Printed beside CoreDNS's published figures for internal
//! names on 2 vCPUs (coredns/deployment, kubernetes/Scaling_CoreDNS.md: 33,669 QPS, 2.608 ms
//! average, GCE n1-standard-2).

#[path = "../tests/cli/cluster_env.rs"]
mod cluster_env;
#[path = "../tests/cli/master_env.rs"]
mod master_env;
#[path = "support/svc_env.rs"]
mod svc_env;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

const NAME: &str = "lb.bench.svc.cluster.local";
const DNS: &str = "10.43.0.10:53";

/// A standard query for `name`'s A record with id `id` (recursion desired).
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Latencies of synchronous queries from `clients` threads for `dur`.
fn latency_loop(clients: usize, dur: Duration) -> Vec<Duration> {
    let threads: Vec<_> = (0..clients)
        .map(|t| {
            std::thread::spawn(move || {
                let s = UdpSocket::bind("0.0.0.0:0").unwrap();
                s.connect(DNS).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                let mut buf = [0u8; 512];
                let mut lat = Vec::new();
                let end = Instant::now() + dur;
                let mut id = (t as u16) << 12;
                while Instant::now() < end {
                    id = id.wrapping_add(1);
                    let q = query(id, NAME);
                    let start = Instant::now();
                    s.send(&q).unwrap();
                    // Answers to earlier, timed-out queries are skipped by id.
                    loop {
                        match s.recv(&mut buf) {
                            Ok(n) if n >= 4 && buf[..2] == id.to_be_bytes() => {
                                assert_eq!(buf[3] & 0x0f, 0, "rcode of {NAME}");
                                lat.push(start.elapsed());
                                break;
                            }
                            Ok(_) => continue,
                            Err(_) => break,
                        }
                    }
                }
                lat
            })
        })
        .collect();
    let mut all: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort();
    all
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let env = svc_env::start();
    let qfile = env.cluster.dir.path().join("queries.txt");
    std::fs::write(&qfile, format!("{NAME} A\n")).unwrap();
    let out = svc_env::netns_command(
        env.client_pid,
        "dnsperf",
        &[
            "-s",
            "10.43.0.10",
            "-d",
            qfile.to_str().unwrap(),
            "-l",
            "5",
            "-c",
            "8",
            "-q",
            "64",
        ],
    )
    .output()
    .expect("dnsperf installed (scripts/install-deps.sh)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "dnsperf: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {key:?} in dnsperf's output:\n{text}"))
    };
    let qps = field("Queries per second:");
    let avg = field("Average Latency (s):");
    let lost = field("Queries lost:");
    let lat = svc_env::in_netns(env.client_pid, || latency_loop(4, Duration::from_secs(3)));
    assert!(!lat.is_empty(), "no answers");
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let agent_pid = env.cluster.agents[0].as_ref().expect("agent").id();
    println!("| measure | podlet agent DNS | CoreDNS (published, 2 vCPU) |");
    println!("| --- | ---: | ---: |");
    println!("| queries/s (dnsperf, 5 s, 64 outstanding) | {qps} | 33,669 |");
    println!("| average latency (dnsperf) | {avg} s | 0.002608 s |");
    println!("| queries lost (dnsperf) | {lost} | – |");
    println!(
        "| synchronous loop, 4 clients, 3 s: {} answers, p50 / p99 | {:.3} / {:.3} ms | – |",
        lat.len(),
        pct(0.5).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0
    );
    println!(
        "agent CPU so far: {:.2} s (RSS {} kB)",
        svc_env::cpu_seconds(agent_pid),
        std::fs::read_to_string(format!("/proc/{agent_pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .map(|v| v.trim().trim_end_matches("kB").trim().to_string())
            .unwrap_or_default()
    );
}
