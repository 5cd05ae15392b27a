//! `make bench-pods`: pod start-up through the whole cluster. The release `podlet master` and
//! three release `podlet agent`s run in node namespaces of the multi-node tier; 100 bare pods
//! (busybox `sleep`) are created through the API by 8 concurrent clients while a watch records
//! when each pod's container is first reported running. Reports p50/p99 of the time from a
//! pod's acknowledged creation to that watch event, beside Kubernetes' pod start-up SLO (p99 ≤
//! 5 s) and this target (p99 ≤ 1 s), and the agents' RSS idle and with the pods
//! running next to the per-container monitors' (containerd-shim's is ~10 MB).

#[path = "../tests/cli/cluster_env.rs"]
mod cluster_env;
#[path = "../tests/cli/master_env.rs"]
mod master_env;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster_env::{wait_for, Cluster};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use serde_json::json;

/// How many pods (`PODLET_BENCH_PODS`, default 100; fewer shows the latency of one pod's path
/// without the burst's contention).
fn pods_count() -> usize {
    std::env::var("PODLET_BENCH_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
}
const NODES: usize = 3;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Pids of `parent`'s children whose command line contains `word`.
fn children_with(parent: u32, word: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == Some(parent) && String::from_utf8_lossy(&cmd).contains(word) {
            out.push(pid);
        }
    }
    out
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Creates the pods and returns each one's creation-to-running latency in ms.
async fn run_pods(client: kube::Client) -> Vec<f64> {
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let running: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let bound: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let total = pods_count();
    let watch = {
        let pods = pods.clone();
        let running = running.clone();
        let bound = bound.clone();
        tokio::spawn(async move {
            let mut stream = pods
                .watch(
                    &WatchParams::default().labels("bench=pods").timeout(290),
                    "0",
                )
                .await
                .expect("watch pods")
                .boxed();
            while let Some(Ok(ev)) = stream.next().await {
                if let WatchEvent::Modified(p) | WatchEvent::Added(p) = ev {
                    if p.spec.as_ref().is_some_and(|s| s.node_name.is_some()) {
                        let name = p.metadata.name.clone().unwrap_or_default();
                        bound
                            .lock()
                            .unwrap()
                            .entry(name)
                            .or_insert_with(Instant::now);
                    }
                    let up = p
                        .status
                        .as_ref()
                        .and_then(|s| s.container_statuses.as_ref())
                        .is_some_and(|cs| {
                            cs.iter()
                                .all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
                        });
                    if up {
                        let name = p.metadata.name.clone().unwrap_or_default();
                        let mut r = running.lock().unwrap();
                        r.entry(name).or_insert_with(Instant::now);
                        if r.len() == total {
                            return;
                        }
                    }
                }
            }
        })
    };
    // Let the watch start before the first create.
    tokio::time::sleep(Duration::from_millis(300)).await;
    futures::stream::iter(0..total)
        .for_each_concurrent(8, |i| {
            let pods = pods.clone();
            let created = created.clone();
            async move {
                let name = format!("bench-{i:03}");
                let pod: Pod = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "labels": {"bench": "pods"}},
                    "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                        "name": "c", "image": "busybox", "imagePullPolicy": "Never",
                        "command": ["sleep", "3600"]}]}
                }))
                .unwrap();
                pods.create(&PostParams::default(), &pod)
                    .await
                    .expect("create pod");
                created.lock().unwrap().insert(name, Instant::now());
            }
        })
        .await;
    let _ = tokio::time::timeout(Duration::from_secs(120), watch).await;
    let created = created.lock().unwrap();
    let running = running.lock().unwrap();
    assert_eq!(
        running.len(),
        total,
        "not every pod came up within 2 minutes"
    );
    let bound = bound.lock().unwrap();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut to_bound: Vec<f64> = created
        .iter()
        .filter_map(|(n, t)| bound.get(n).map(|b| ms(b.saturating_duration_since(*t))))
        .collect();
    if !to_bound.is_empty() {
        println!(
            "(create → bound: p50 {:.0} ms, p99 {:.0} ms; first create → last running: {:.0} ms)",
            pct(&mut to_bound, 0.5),
            pct(&mut to_bound, 0.99),
            ms(running
                .values()
                .max()
                .unwrap()
                .saturating_duration_since(*created.values().min().unwrap()))
        );
    }
    created
        .iter()
        .map(|(n, t)| ms(running[n].saturating_duration_since(*t)))
        .collect()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let cluster = Cluster::new(NODES);
    let agent_pids: Vec<u32> = cluster
        .agents
        .iter()
        .map(|a| a.as_ref().expect("agent running").id())
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    let idle: Vec<u64> = agent_pids.iter().map(|p| rss_kib(*p)).collect();
    // The client lives in node0's namespace, where the master listens: a thread joins it and
    // runs a single-threaded runtime, so every socket it opens is made there.
    let netns = std::fs::File::open(cluster.topo.nodes[0].netns().netns_path()).unwrap();
    let kubeconfig = cluster.master_dir().join("admin.kubeconfig");
    let mut lat = std::thread::spawn(move || {
        nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET).expect("join node0");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
            let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .unwrap();
            run_pods(kube::Client::try_from(cfg).unwrap()).await
        })
    })
    .join()
    .expect("bench thread");
    std::thread::sleep(Duration::from_secs(3));
    let busy: Vec<u64> = agent_pids.iter().map(|p| rss_kib(*p)).collect();
    let monitors: Vec<u64> = agent_pids
        .iter()
        .flat_map(|p| children_with(*p, "monitor"))
        .map(rss_kib)
        .filter(|r| *r > 0)
        .collect();
    let per_node: Vec<usize> = (0..NODES)
        .map(|i| {
            cluster
                .pods("bench=pods")
                .iter()
                .filter(|p| cluster.node_index(p) == i)
                .count()
        })
        .collect();
    let p50 = pct(&mut lat, 0.50);
    let p99 = pct(&mut lat, 0.99);
    let max = pct(&mut lat, 1.0);
    println!("| measurement | podlet | Kubernetes SLO / peer | target |");
    println!("|---|---:|---:|---:|");
    println!("| pods per node | {per_node:?} | | |");
    println!("| create → running (watch), p50 | {p50:.0} ms | | |");
    println!("| create → running (watch), p99 | {p99:.0} ms | ≤ 5 s (SLO) | ≤ 1 s |");
    println!("| create → running (watch), max | {max:.0} ms | | |");
    println!(
        "| agent RSS idle (each) | {} MiB | | |",
        idle.iter()
            .map(|k| format!("{:.1}", mib(*k)))
            .collect::<Vec<_>>()
            .join(" / ")
    );
    println!(
        "| agent RSS with the pods (each) | {} MiB | kubelet + containerd ~275 MB | ≤ 50 MiB |",
        busy.iter()
            .map(|k| format!("{:.1}", mib(*k)))
            .collect::<Vec<_>>()
            .join(" / ")
    );
    let avg = monitors.iter().sum::<u64>() as f64 / monitors.len().max(1) as f64;
    println!(
        "| per-container monitor RSS (avg of {}) | {:.1} MiB | containerd-shim ~10 MB | |",
        monitors.len(),
        avg / 1024.0
    );
    // Clean up through the API first so the agents tear the pods down themselves.
    cluster.kubectl_ok(&["delete", "pods", "-l", "bench=pods", "--wait=false"]);
    wait_for("bench pods gone", Duration::from_secs(120), || {
        cluster.pods("bench=pods").is_empty().then_some(())
    });
}
