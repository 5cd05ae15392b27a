//! `make bench-scheduler`: 10,000 pods onto 1,000 simulated nodes through the release
//! `podlet master` (TLS, kube-rs): pods are created by 32 concurrent clients while a watch
//! records when each is bound. Reports the binding throughput (pods bound per second between
//! the first and the last binding) and the p50/p99 time from a pod's acknowledged creation to
//! its binding. Target (issue 7, this 2-core machine): ≥ 1,000 pods/s.

#[path = "../tests/cli/master_env.rs"]
mod master_env;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::Client;
use master_env::{micro_now, Master};
use serde_json::json;

const NODES: usize = 1000;
const PODS: usize = 10_000;

async fn renew_leases(c: Client) {
    let leases: Api<Lease> = Api::namespaced(c, "kube-node-lease");
    loop {
        let names: Vec<String> = (0..NODES).map(|i| format!("n{i:04}")).collect();
        futures::stream::iter(names)
            .for_each_concurrent(16, |n| {
                let leases = leases.clone();
                async move {
                    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": n},
                                       "spec": {"holderIdentity": n, "leaseDurationSeconds": 40, "renewTime": micro_now()}});
                    let _ = leases.patch(&n, &PatchParams::apply("bench").force(), &Patch::Apply(&lease)).await;
                }
            })
            .await;
        tokio::time::sleep(Duration::from_secs(4)).await;
    }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let m = Master::start(&dir.path().join("m"), &[]);
    rt.block_on(async {
        let c = m.client().await;
        let nodes: Api<Node> = Api::all(c.clone());
        futures::stream::iter(0..NODES)
            .for_each_concurrent(32, |i| {
                let nodes = nodes.clone();
                async move {
                    let n: Node = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Node",
                        "metadata": {"name": format!("n{i:04}"), "labels": {"kubernetes.io/hostname": format!("n{i:04}")}},
                        "status": {"allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"},
                                   "conditions": [{"type": "Ready", "status": "True"}]}})).unwrap();
                    nodes.create(&PostParams::default(), &n).await.unwrap();
                }
            })
            .await;
        let renewer = tokio::spawn(renew_leases(c.clone()));
        tokio::time::sleep(Duration::from_secs(2)).await;
        let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
        let rv = pods.list(&ListParams::default().limit(1)).await.unwrap().metadata.resource_version.unwrap();
        let acked: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let bound: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let b = bound.clone();
        let pw = pods.clone();
        let watcher = tokio::spawn(async move {
            let mut s = pw.watch(&WatchParams::default().timeout(300), &rv).await.unwrap().boxed();
            while let Some(Ok(ev)) = s.next().await {
                if let WatchEvent::Modified(p) = ev {
                    if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
                        let mut b = b.lock().unwrap();
                        b.entry(p.metadata.name.unwrap()).or_insert_with(Instant::now);
                        if b.len() == PODS {
                            return;
                        }
                    }
                }
            }
        });
        let start = Instant::now();
        let a = acked.clone();
        futures::stream::iter(0..PODS)
            .for_each_concurrent(32, |i| {
                let (pods, a) = (pods.clone(), a.clone());
                async move {
                    let p: Pod = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("p{i:05}")},
                        "spec": {"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "100m", "memory": "100Mi"}}}]}})).unwrap();
                    pods.create(&PostParams::default(), &p).await.unwrap();
                    a.lock().unwrap().insert(format!("p{i:05}"), Instant::now());
                }
            })
            .await;
        let created = start.elapsed();
        let _ = tokio::time::timeout(Duration::from_secs(240), watcher).await;
        renewer.abort();
        let bound = bound.lock().unwrap().clone();
        let acked = acked.lock().unwrap().clone();
        assert_eq!(bound.len(), PODS, "only {} of {PODS} pods were bound", bound.len());
        let first = bound.values().min().unwrap();
        let last = bound.values().max().unwrap();
        let span = last.duration_since(*first).as_secs_f64().max(1e-3);
        let mut lat: Vec<f64> = bound
            .iter()
            .filter_map(|(n, t)| acked.get(n).map(|a| t.saturating_duration_since(*a).as_secs_f64() * 1000.0))
            .collect();
        let rss = std::fs::read_to_string(format!("/proc/{}/status", m.pid())).unwrap_or_default();
        let rss = rss.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap_or("").trim().to_string();
        println!("| measurement | result |");
        println!("|---|---|");
        println!("| pods created (32 clients) | {PODS} in {:.1} s ({:.0}/s) |", created.as_secs_f64(), PODS as f64 / created.as_secs_f64());
        println!("| binding throughput, {PODS} pods on {NODES} nodes | {:.0} pods/s ({PODS} bound in {span:.1} s) |", PODS as f64 / span);
        println!("| creation acknowledged → bound, p50 / p99 | {:.0} / {:.0} ms |", pct(&mut lat, 0.5), pct(&mut lat, 0.99));
        println!("| master RSS after | {rss} |");
    });
}
