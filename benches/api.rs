//! `make bench-api`: the master under load, through kube-rs over TLS like any client, on the
//! embedded SQLite store and on etcd (Debian's etcd-server on loopback, started here):
//! - mutating latency at a fixed 200 creates/s (open loop), p50/p99;
//! - closed-loop create and get throughput with 16 concurrent clients;
//! - LIST of 10,000 pods, p50/p99 of 10 lists;
//! - watch delivery latency (creation → event) to 100 concurrent watchers;
//! - the master's RSS idle and with 10,000 pods stored.
//!
//! Results are printed as markdown for docs/benchmarks.md.

#[path = "../tests/cli/master_env.rs"]
mod master_env;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};

use master_env::Master;
use serde_json::json;

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench", "tier": "load"}},
        "spec": {"containers": [{"name": "c", "image": "registry.example/app:1.0",
                                  "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]},
    }))
    .unwrap()
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

struct Row(String, String);

async fn run(label: &str, m: &Master) -> Vec<Row> {
    let mut rows = Vec::new();
    let c = m.client().await;
    let api: Api<Pod> = Api::namespaced(c.clone(), "default");
    tokio::time::sleep(Duration::from_millis(500)).await;
    rows.push(Row(
        format!("{label}: RSS idle"),
        format!("{:.1} MiB", m.rss_mib()),
    ));

    // Open loop: 200 creates/s for 10 s.
    let lat = Arc::new(Mutex::new(Vec::new()));
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let mut tasks = Vec::new();
    let start = Instant::now();
    for i in 0..2000 {
        tick.tick().await;
        let (api, lat) = (api.clone(), lat.clone());
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            api.create(&PostParams::default(), &pod(&format!("open-{i:05}")))
                .await
                .expect("create");
            lat.lock().unwrap().push(t.elapsed().as_secs_f64() * 1000.0);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let mut l = lat.lock().unwrap().clone();
    rows.push(Row(
        format!("{label}: create at 200/s (open loop, 2,000 pods) p50 / p99"),
        format!(
            "{:.1} / {:.1} ms ({:.0} writes/s achieved)",
            pct(&mut l, 0.5),
            pct(&mut l, 0.99),
            2000.0 / secs
        ),
    ));

    // Closed loop: 16 clients creating until 10,000 pods exist; then gets.
    let made = Arc::new(std::sync::atomic::AtomicUsize::new(2000));
    let lat = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (api, lat, made) = (api.clone(), lat.clone(), made.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= 10_000 {
                    return;
                }
                let t = Instant::now();
                api.create(&PostParams::default(), &pod(&format!("fill-{i:05}")))
                    .await
                    .expect("create");
                lat.lock().unwrap().push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let mut l = lat.lock().unwrap().clone();
    rows.push(Row(
        format!("{label}: create, 16 clients (8,000 pods) p50 / p99"),
        format!(
            "{:.1} / {:.1} ms, {:.0} creates/s",
            pct(&mut l, 0.5),
            pct(&mut l, 0.99),
            8000.0 / secs
        ),
    ));
    rows.push(Row(
        format!("{label}: RSS with 10,000 pods"),
        format!("{:.1} MiB", m.rss_mib()),
    ));

    let lat = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..16 {
        let (api, lat) = (api.clone(), lat.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..200 {
                let t = Instant::now();
                api.get(&format!("fill-{:05}", 2000 + (w * 200 + i) % 8000))
                    .await
                    .expect("get");
                lat.lock().unwrap().push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let mut l = lat.lock().unwrap().clone();
    rows.push(Row(
        format!("{label}: get, 16 clients p50 / p99"),
        format!(
            "{:.1} / {:.1} ms, {:.0} gets/s",
            pct(&mut l, 0.5),
            pct(&mut l, 0.99),
            3200.0 / secs
        ),
    ));

    // The server's LIST (request to last byte received), and the same through kube-rs's typed
    // decoding (which adds the client's own parsing of 10,000 pods).
    let mut l = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let req = http::Request::get("/api/v1/namespaces/default/pods")
            .body(Vec::new())
            .unwrap();
        let text = c.request_text(req).await.expect("list");
        l.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(text.len() > 1_000_000);
    }
    rows.push(Row(
        format!("{label}: LIST of 10,000 pods (server, bytes received) p50 / p99"),
        format!("{:.0} / {:.0} ms", pct(&mut l, 0.5), pct(&mut l, 0.99)),
    ));
    let mut l = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let list = api.list(&ListParams::default()).await.expect("list");
        assert_eq!(list.items.len(), 10_000);
        l.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    rows.push(Row(
        format!("{label}: LIST of 10,000 pods decoded by kube-rs p50"),
        format!("{:.0} ms", pct(&mut l, 0.5)),
    ));

    // Watch fan-out: 100 watchers, 200 creates at 100/s; creation → delivery.
    let rv = api
        .list(&ListParams::default().limit(1))
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let lat = Arc::new(Mutex::new(Vec::new()));
    let mut watchers = Vec::new();
    for _ in 0..100 {
        let (api, rv, sent, lat) = (api.clone(), rv.clone(), sent.clone(), lat.clone());
        watchers.push(tokio::spawn(async move {
            let mut s = api
                .watch(&WatchParams::default().labels("app=watch").timeout(60), &rv)
                .await
                .unwrap()
                .boxed();
            let mut seen = 0;
            while let Some(Ok(ev)) = s.next().await {
                if let WatchEvent::Added(p) = ev {
                    let name = p.metadata.name.unwrap();
                    if let Some(t) = sent.lock().unwrap().get(&name) {
                        lat.lock().unwrap().push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    seen += 1;
                    if seen == 200 {
                        return;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for i in 0..200 {
        tick.tick().await;
        let mut p = pod(&format!("watch-{i:03}"));
        p.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("app".into(), "watch".into());
        let name = p.metadata.name.clone().unwrap();
        sent.lock().unwrap().insert(name, Instant::now());
        api.create(&PostParams::default(), &p).await.unwrap();
    }
    for w in watchers {
        let _ = tokio::time::timeout(Duration::from_secs(30), w).await;
    }
    let mut l = lat.lock().unwrap().clone();
    rows.push(Row(
        format!(
            "{label}: watch delivery to 100 watchers ({} events) p50 / p99",
            l.len()
        ),
        format!("{:.1} / {:.1} ms", pct(&mut l, 0.5), pct(&mut l, 0.99)),
    ));
    rows
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list; nothing to run then.
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    {
        let m = Master::start(&dir.path().join("sqlite"), &[]);
        rows.extend(rt.block_on(run("SQLite", &m)));
    }
    let etcd = podlet_testkit::etcd::Etcd::start().expect("etcd-server installed");
    assert!(etcd.wait_ready(), "etcd: {}", etcd.log());
    {
        let m = Master::start(
            &dir.path().join("etcd"),
            &["--etcd-endpoints", &etcd.endpoint],
        );
        rows.extend(rt.block_on(run("etcd", &m)));
    }
    println!("| measurement | result |");
    println!("|---|---|");
    for Row(k, v) in rows {
        println!("| {k} | {v} |");
    }
}
