//! `make bench-smoke`, the tail of `make test`: a cheap guard against the master's memory
//! regressing unseen again (issue 21). It starts `podlet master` (the build `make test` just
//! made), measures its RSS idle and after 2,000 pods (500 of them created at 200/s, the rest
//! by 16 clients), LISTs them once, and prints every number. Memory is stable run to run, so
//! it **fails** when an RSS exceeds its recorded bound in `benches/smoke-bounds.json` by more
//! than 25 %; times vary with the machine and only print. Re-record the bounds with
//! `PODLET_SMOKE_RECORD=1 make bench-smoke` when a change is meant to move them (and say why
//! in docs/benchmarks.md).

#[path = "../tests/cli/master_env.rs"]
mod master_env;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use master_env::Master;
use serde_json::{json, Value};

const BOUNDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/smoke-bounds.json");
/// How far above its recorded bound an RSS may go.
const SLACK: f64 = 1.25;

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "smoke"}},
        "spec": {"containers": [{"name": "c", "image": "registry.example/app:1.0"}]},
    }))
    .unwrap()
}

/// (idle RSS, RSS with 2,000 pods, p99 of the paced creates, LIST time), MiB and ms.
async fn measure(m: &Master) -> (f64, f64, f64, f64) {
    let api: Api<Pod> = Api::namespaced(m.client().await, "default");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = m.rss_mib();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let mut tasks = Vec::new();
    for i in 0..500 {
        tick.tick().await;
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            api.create(&PostParams::default(), &pod(&format!("paced-{i:04}")))
                .await
                .expect("create");
            t.elapsed().as_secs_f64() * 1000.0
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.push(t.await.unwrap());
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p99 = lat[(lat.len() as f64 * 0.99) as usize - 1];
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(500));
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (api, next) = (api.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= 2000 {
                        return;
                    }
                    api.create(&PostParams::default(), &pod(&format!("fill-{i:04}")))
                        .await
                        .expect("create");
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    // Let the controllers and the scheduler catch up before measuring.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let t = Instant::now();
    let list = api.list(&ListParams::default()).await.expect("list");
    let list_ms = t.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(list.items.len(), 2000, "the LIST returned every pod");
    (idle, m.rss_mib(), p99, list_ms)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let m = Master::start(&dir.path().join("master"), &[]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (idle, full, p99, list_ms) = rt.block_on(measure(&m));
    drop(m);
    println!("bench-smoke: master RSS idle {idle:.1} MiB, with 2,000 pods {full:.1} MiB");
    println!("bench-smoke: create p99 at 200/s {p99:.1} ms, LIST of 2,000 pods {list_ms:.0} ms (times only print)");
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    if std::env::var_os("PODLET_SMOKE_RECORD").is_some() {
        let mut all: Value = std::fs::read(BOUNDS)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(|| json!({}));
        all[profile] = json!({"rss_idle_mib": (idle * 10.0).round() / 10.0,
                              "rss_2000_pods_mib": (full * 10.0).round() / 10.0});
        std::fs::write(BOUNDS, serde_json::to_string_pretty(&all).unwrap() + "\n").unwrap();
        println!("bench-smoke: recorded the {profile} bounds in {BOUNDS}");
        return;
    }
    let bounds: Value =
        serde_json::from_slice(&std::fs::read(BOUNDS).expect("benches/smoke-bounds.json"))
            .expect("benches/smoke-bounds.json is JSON");
    let b = &bounds[profile];
    let mut failed = false;
    for (what, got, key) in [
        ("RSS idle", idle, "rss_idle_mib"),
        ("RSS with 2,000 pods", full, "rss_2000_pods_mib"),
    ] {
        let bound = b[key]
            .as_f64()
            .unwrap_or_else(|| panic!("no {profile}.{key} in {BOUNDS}"));
        let limit = bound * SLACK;
        let verdict = if got > limit { "REGRESSED" } else { "ok" };
        println!(
            "bench-smoke: {what} {got:.1} MiB, recorded {bound:.1}, limit {limit:.1}: {verdict}"
        );
        failed |= got > limit;
    }
    if failed {
        eprintln!("bench-smoke: the master's memory grew more than 25 % past its recorded bound");
        std::process::exit(1);
    }
}
