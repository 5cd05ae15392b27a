//! Crash safety: `kill -9` of `podlet master` (SQLite store) under concurrent write load loses
//! no acknowledged write; after a restart every acknowledged object is there with the
//! resourceVersion it was acknowledged with, each writer's versions are in order, and new
//! writes continue above them.

#[path = "master_env.rs"]
mod master_env;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};

use master_env::Master;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_write_load_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("m");
    let mut m = Master::start(&data, &[]);
    let api: Api<ConfigMap> = Api::namespaced(m.client().await, "default");
    let acked: Arc<Mutex<Vec<(usize, String, i64)>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..4 {
        let (api, acked) = (api.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let mut c = ConfigMap::default();
                c.metadata.name = Some(format!("w{w}-{i:05}"));
                c.data = Some(BTreeMap::from([("i".to_string(), i.to_string())]));
                match api.create(&PostParams::default(), &c).await {
                    Ok(o) => {
                        let rv = o.metadata.resource_version.unwrap().parse::<i64>().unwrap();
                        acked
                            .lock()
                            .unwrap()
                            .push((w, o.metadata.name.unwrap(), rv));
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    // Let the load run, then crash the master in the middle of it.
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if acked.lock().unwrap().len() >= 200 {
            break;
        }
    }
    m.kill9();
    for w in writers {
        let _ = tokio::time::timeout(Duration::from_secs(30), w).await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 50,
        "too few writes before the crash: {}",
        acked.len()
    );

    let m = Master::start(&data, &[]);
    let api: Api<ConfigMap> = Api::namespaced(m.client().await, "default");
    let stored: BTreeMap<String, i64> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|c| {
            (
                c.metadata.name.unwrap(),
                c.metadata.resource_version.unwrap().parse().unwrap(),
            )
        })
        .collect();
    for (_, name, rv) in &acked {
        assert_eq!(
            stored.get(name),
            Some(rv),
            "acknowledged {name} at {rv} is missing or changed"
        );
    }
    for w in 0..4 {
        let revs: Vec<i64> = acked
            .iter()
            .filter(|(x, _, _)| *x == w)
            .map(|(_, _, rv)| *rv)
            .collect();
        assert!(revs.windows(2).all(|p| p[0] < p[1]), "writer {w}: {revs:?}");
    }
    let max = stored.values().max().copied().unwrap_or(0);
    let mut c = ConfigMap::default();
    c.metadata.name = Some("after-restart".into());
    let new = api.create(&PostParams::default(), &c).await.unwrap();
    assert!(
        new.metadata
            .resource_version
            .unwrap()
            .parse::<i64>()
            .unwrap()
            > max
    );
}
