//! `make bench-lb`: HTTP through a Service's ClusterIP (the agent's userspace proxy: `sk_lookup`
//! steering, Maglev, `splice` relay) against the same requests straight to the pod, and
//! against an nftables DNAT rule for another virtual IP in the client's own namespace (the
//! kernel path kube-proxy's nftables mode uses), in one run: wrk from the client pod's network
//! namespace, keep-alive and `Connection: close`. Reports requests/s, p99, the ratios the issue
//! targets (≥ 0.8× direct with keep-alive, ≥ 0.6× with a connection per request), the added
//! p99, and the agent's CPU time per 10,000 requests through the proxy.

#[path = "../tests/cli/cluster_env.rs"]
mod cluster_env;
#[path = "../tests/cli/master_env.rs"]
mod master_env;
#[path = "support/svc_env.rs"]
mod svc_env;

use std::time::Duration;

/// The virtual IP of the nftables reference.
const NFT_VIP: &str = "10.99.0.1";

/// One wrk run's result.
#[derive(Debug, Clone, Copy)]
struct Run {
    errors: u64,
    rps: f64,
    p99_ms: f64,
    requests: f64,
}

fn millis(v: &str) -> Option<f64> {
    let v = v.trim();
    for (unit, scale) in [("us", 0.001), ("ms", 1.0), ("s", 1000.0)] {
        if let Some(n) = v.strip_suffix(unit) {
            return n.parse::<f64>().ok().map(|n| n * scale);
        }
    }
    None
}

fn parse(out: &str) -> Run {
    let rps = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk's output:\n{out}"));
    let p99_ms = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .and_then(millis)
        .unwrap_or_else(|| panic!("no 99% latency in wrk's output:\n{out}"));
    let requests = out
        .lines()
        .find_map(|l| {
            l.trim()
                .split_once(" requests in ")
                .and_then(|(n, _)| n.trim().parse().ok())
        })
        .unwrap_or(0.0);
    // "Socket errors: connect 0, read 12, write 0, timeout 3" when there were any.
    let errors = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Socket errors:"))
        .map(|v| {
            v.split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    Run {
        errors,
        rps,
        p99_ms,
        requests,
    }
}

fn wrk(client_pid: i64, url: &str, close: bool) -> Run {
    let mut args = vec!["-t2", "-c16", "-d5s", "--latency"];
    if close {
        args.extend(["-H", "Connection: close"]);
    }
    args.push(url);
    let out = svc_env::netns_command(client_pid, "wrk", &args)
        .output()
        .expect("wrk installed (scripts/install-deps.sh)");
    assert!(
        out.status.success(),
        "wrk: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse(&String::from_utf8_lossy(&out.stdout))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let env = svc_env::start();
    let nft = format!(
        "table ip podlet_bench_lb {{\n  chain out {{\n    type nat hook output priority -100; policy accept;\n    \
         ip daddr {NFT_VIP} tcp dport 8080 dnat to {}\n  }}\n}}\n",
        env.backend_ip
    );
    let out = svc_env::netns_command(env.client_pid, "nft", &["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut ch| {
            use std::io::Write;
            ch.stdin.take().unwrap().write_all(nft.as_bytes())?;
            ch.wait_with_output()
        })
        .expect("nft installed (scripts/install-deps.sh)");
    assert!(
        out.status.success(),
        "nft: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let agent_pid = env.cluster.agents[0].as_ref().expect("agent").id();
    let targets = [
        (
            "pod IP (direct)",
            format!("http://{}:8080/", env.backend_ip),
        ),
        (
            "ClusterIP (podlet proxy)",
            format!("http://{}:8080/", env.cluster_ip),
        ),
        ("nftables DNAT (kernel)", format!("http://{NFT_VIP}:8080/")),
    ];
    println!("| mode | path | requests/s | p99 | vs direct | socket errors |");
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    let mut cpu_per_10k = Vec::new();
    for close in [false, true] {
        let mode = if close {
            "Connection: close"
        } else {
            "keep-alive"
        };
        let mut direct: Option<Run> = None;
        for (name, url) in &targets {
            // A short warm-up, then the measured run.
            let _ = wrk(env.client_pid, url, close);
            let cpu_before = svc_env::cpu_seconds(agent_pid);
            let r = wrk(env.client_pid, url, close);
            let cpu = svc_env::cpu_seconds(agent_pid) - cpu_before;
            if name.starts_with("ClusterIP") && r.requests > 0.0 {
                cpu_per_10k.push((mode, cpu / r.requests * 10_000.0));
            }
            let d = *direct.get_or_insert(r);
            println!(
                "| {mode} | {name} | {:.0} | {:.2} ms (+{:.2}) | {:.2}× | {} |",
                r.rps,
                r.p99_ms,
                (r.p99_ms - d.p99_ms).max(0.0),
                r.rps / d.rps,
                r.errors
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    for (mode, cpu) in cpu_per_10k {
        println!(
            "agent CPU per 10,000 requests through the ClusterIP ({mode}): {:.3} s",
            cpu
        );
    }
    println!("targets: ClusterIP ≥ 0.8× direct with keep-alive, ≥ 0.6× with Connection: close");
}
