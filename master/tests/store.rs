//! Store conformance: the same behaviour from the SQLite backend and from etcd (Debian's
//! `etcd-server`, started by this test on loopback ports and killed at the end, its data in a
//! temporary directory).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use podlet_master::store::etcd::EtcdStore;
use podlet_master::store::sqlite::SqliteStore;
use podlet_master::store::{EventKind, Store, StoreError};
use podlet_testkit::etcd::Etcd;

async fn etcd_store(etcd: &Etcd) -> EtcdStore {
    assert!(etcd.wait_ready(), "etcd did not start: {}", etcd.log());
    for _ in 0..100 {
        if let Ok(s) = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint)).await {
            if s.current_revision().await.is_ok() {
                return s;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("etcd at {} did not come up: {}", etcd.endpoint, etcd.log());
}

async fn conformance(s: Arc<dyn Store>) {
    // Create, get, duplicates.
    let r1 = s.create("/t/a/1", b"one".to_vec()).await.unwrap();
    let got = s.get("/t/a/1").await.unwrap().unwrap();
    assert_eq!(
        (got.value.as_slice(), got.mod_revision, got.create_revision),
        (&b"one"[..], r1, r1)
    );
    assert_eq!(
        s.create("/t/a/1", b"again".to_vec()).await,
        Err(StoreError::AlreadyExists("/t/a/1".into()))
    );
    assert_eq!(s.get("/t/a/missing").await.unwrap(), None);

    // Optimistic concurrency.
    let r2 = s.update("/t/a/1", b"two".to_vec(), Some(r1)).await.unwrap();
    assert!(r2 > r1);
    match s.update("/t/a/1", b"stale".to_vec(), Some(r1)).await {
        Err(StoreError::Conflict { actual, .. }) => assert_eq!(actual, r2),
        other => panic!("stale update: {other:?}"),
    }
    assert!(matches!(
        s.update("/t/a/nope", b"x".to_vec(), None).await,
        Err(StoreError::NotFound(_))
    ));
    let got = s.get("/t/a/1").await.unwrap().unwrap();
    assert_eq!((got.create_revision, got.mod_revision), (r1, r2));

    // Lists: prefix, order, pages, a consistent snapshot at an older revision.
    for k in ["/t/b/3", "/t/b/1", "/t/b/2", "/t/c/1"] {
        s.create(k, k.as_bytes().to_vec()).await.unwrap();
    }
    let all = s.list("/t/b/", None, 0, None).await.unwrap();
    let keys: Vec<&str> = all.items.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(keys, ["/t/b/1", "/t/b/2", "/t/b/3"]);
    assert!(!all.more);
    let snapshot = all.revision;
    let p1 = s.list("/t/b/", None, 2, Some(snapshot)).await.unwrap();
    assert_eq!(p1.items.len(), 2);
    assert!(p1.more);
    // Changes after the snapshot do not show in its later pages.
    s.update("/t/b/3", b"changed".to_vec(), None).await.unwrap();
    s.create("/t/b/4", b"new".to_vec()).await.unwrap();
    s.delete("/t/b/1", None).await.unwrap();
    let p2 = s
        .list("/t/b/", Some(&p1.items[1].key), 2, Some(snapshot))
        .await
        .unwrap();
    assert_eq!(p2.items.len(), 1);
    assert_eq!(p2.items[0].key, "/t/b/3");
    assert_eq!(p2.items[0].value, b"/t/b/3");
    assert!(!p2.more);
    let now = s.list("/t/b/", None, 0, None).await.unwrap();
    let keys: Vec<&str> = now.items.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(keys, ["/t/b/2", "/t/b/3", "/t/b/4"]);

    // Deletes.
    let cur = s.get("/t/b/2").await.unwrap().unwrap();
    assert!(matches!(
        s.delete("/t/b/2", Some(cur.mod_revision - 1)).await,
        Err(StoreError::Conflict { .. })
    ));
    let (prev, drev) = s.delete("/t/b/2", Some(cur.mod_revision)).await.unwrap();
    assert_eq!(prev.value, b"/t/b/2");
    assert!(drev > cur.mod_revision);
    assert!(matches!(
        s.delete("/t/b/2", None).await,
        Err(StoreError::NotFound(_))
    ));

    // Watch: history after a revision, in order, then live changes; other prefixes filtered.
    let mut w = s.watch("/t/b/", snapshot).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..4 {
        let ev = tokio::time::timeout(Duration::from_secs(5), w.next())
            .await
            .expect("history event")
            .unwrap()
            .unwrap();
        seen.push((ev.kind, ev.kv.key.clone()));
    }
    assert_eq!(
        seen,
        [
            (EventKind::Put, "/t/b/3".to_string()),
            (EventKind::Put, "/t/b/4".to_string()),
            (EventKind::Delete, "/t/b/1".to_string()),
            (EventKind::Delete, "/t/b/2".to_string()),
        ]
    );
    s.create("/t/c/2", b"elsewhere".to_vec()).await.unwrap();
    let live = s.update("/t/b/4", b"live".to_vec(), None).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .expect("live event")
        .unwrap()
        .unwrap();
    assert_eq!(
        (ev.kind, ev.kv.key.as_str(), ev.revision),
        (EventKind::Put, "/t/b/4", live)
    );
    assert_eq!(ev.kv.value, b"live");
    assert_eq!(ev.prev.unwrap().value, b"new");

    // Concurrency: distinct revisions for concurrent creates; one winner per expected revision.
    let mut tasks = Vec::new();
    for i in 0..50 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.create(&format!("/t/p/{i:03}"), vec![b'x']).await.unwrap()
        }));
    }
    let mut revs = Vec::new();
    for t in tasks {
        revs.push(t.await.unwrap());
    }
    revs.sort();
    revs.dedup();
    assert_eq!(revs.len(), 50);
    let base = s.get("/t/p/000").await.unwrap().unwrap().mod_revision;
    let mut tasks = Vec::new();
    for i in 0..10u8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.update("/t/p/000", vec![i], Some(base)).await.is_ok()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += t.await.unwrap() as usize;
    }
    assert_eq!(wins, 1, "exactly one conditional update wins");

    // Compaction: older revisions are gone for lists and watches.
    let cur = s.current_revision().await.unwrap();
    s.compact(cur).await.unwrap();
    assert!(matches!(
        s.list("/t/", None, 0, Some(snapshot)).await,
        Err(StoreError::Compacted { .. })
    ));
    let old = s.watch("/t/", snapshot).await;
    let failed = match old {
        Err(StoreError::Compacted { .. }) => true,
        Ok(mut st) => matches!(
            tokio::time::timeout(Duration::from_secs(5), st.next()).await,
            Ok(Some(Err(StoreError::Compacted { .. })))
        ),
        Err(e) => panic!("{e}"),
    };
    assert!(
        failed,
        "a watch from a compacted revision fails with Compacted"
    );
    assert!(s.list("/t/", None, 0, None).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("state.db")).unwrap();
    conformance(Arc::new(s)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_keeps_everything_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let last = {
        let s = SqliteStore::open(&path).unwrap();
        for i in 0..20 {
            s.create(&format!("/k/{i:02}"), vec![i]).await.unwrap();
        }
        s.current_revision().await.unwrap()
    };
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.current_revision().await.unwrap(), last);
    let page = s.list("/k/", None, 0, None).await.unwrap();
    assert_eq!(page.items.len(), 20);
    assert!(s.create("/k/new", vec![]).await.unwrap() > last);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_store_conformance() {
    let Some(etcd) = Etcd::start() else {
        panic!("etcd is not installed (apt install etcd-server)");
    };
    let s = etcd_store(&etcd).await;
    conformance(Arc::new(s)).await;
}
