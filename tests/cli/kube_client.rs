//! kube-rs (the Rust client, unchanged) against `podlet master` over TLS: typed create/get/
//! patch (merge, strategic, JSON, server-side apply)/delete, `limit`/`continue` paging with a
//! consistent snapshot, a reflector that follows creates, updates and deletes, selector-scoped
//! watches, and the 410 a watch from a too-old resourceVersion gets.

#[path = "master_env.rs"]
mod master_env;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::{reflector, watcher, WatchStreamExt};

use master_env::Master;
use serde_json::json;

fn cm(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    let mut c = ConfigMap::default();
    c.metadata.name = Some(name.into());
    c.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    c.data = Some(BTreeMap::from([("k".to_string(), "v".to_string())]));
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_crud_and_patches() {
    let dir = tempfile::tempdir().unwrap();
    let m = Master::start(&dir.path().join("m"), &[]);
    let api: Api<ConfigMap> = Api::namespaced(m.client().await, "default");
    let created = api
        .create(&PostParams::default(), &cm("one", &[("app", "a")]))
        .await
        .unwrap();
    let uid = created.metadata.uid.clone().unwrap();
    assert!(created.metadata.resource_version.is_some());
    let got = api.get("one").await.unwrap();
    assert_eq!(got.metadata.uid.as_deref(), Some(uid.as_str()));
    let err = api
        .create(&PostParams::default(), &cm("one", &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409 && s.reason == "AlreadyExists"),
        "{err:?}"
    );

    let p = api
        .patch(
            "one",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"m": "1"}})),
        )
        .await
        .unwrap();
    assert_eq!(p.data.as_ref().unwrap()["m"], "1");
    let p = api
        .patch(
            "one",
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"labels": {"s": "2"}}})),
        )
        .await
        .unwrap();
    assert_eq!(p.metadata.labels.as_ref().unwrap()["s"], "2");
    let jp: json_patch::Patch =
        serde_json::from_value(json!([{"op": "add", "path": "/data/j", "value": "3"}])).unwrap();
    let p = api
        .patch("one", &PatchParams::default(), &Patch::Json::<()>(jp))
        .await
        .unwrap();
    assert_eq!(p.data.as_ref().unwrap()["j"], "3");
    let applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "two"}, "data": {"a": "b"}});
    let ssa = PatchParams::apply("kube-test");
    let two = api
        .patch("two", &ssa, &Patch::Apply(&applied))
        .await
        .unwrap();
    assert_eq!(two.data.as_ref().unwrap()["a"], "b");
    let again = api
        .patch("two", &ssa, &Patch::Apply(&applied))
        .await
        .unwrap();
    assert_eq!(
        again.metadata.resource_version, two.metadata.resource_version,
        "an unchanged apply writes nothing"
    );

    // Optimistic concurrency through replace.
    let mut stale = api.get("one").await.unwrap();
    api.patch(
        "one",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"x": "y"}})),
    )
    .await
    .unwrap();
    stale.data.as_mut().unwrap().insert("z".into(), "w".into());
    let err = api
        .replace("one", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409 && s.reason == "Conflict"),
        "{err:?}"
    );

    api.delete("one", &DeleteParams::default()).await.unwrap();
    let err = api.get("one").await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 404),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_is_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let m = Master::start(&dir.path().join("m"), &[]);
    let api: Api<ConfigMap> = Api::namespaced(m.client().await, "default");
    for i in 0..25 {
        api.create(
            &PostParams::default(),
            &cm(&format!("page-{i:02}"), &[("set", "paging")]),
        )
        .await
        .unwrap();
    }
    let lp = ListParams::default().labels("set=paging").limit(10);
    let first = api.list(&lp).await.unwrap();
    assert_eq!(first.items.len(), 10);
    let token = first.metadata.continue_.clone().expect("a continue token");
    // Changes after the first page do not leak into later pages of the same list.
    api.create(&PostParams::default(), &cm("page-99", &[("set", "paging")]))
        .await
        .unwrap();
    api.delete("page-24", &DeleteParams::default())
        .await
        .unwrap();
    let mut names: Vec<String> = first
        .items
        .iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect();
    let mut next = Some(token);
    while let Some(t) = next {
        let page = api.list(&lp.clone().continue_token(&t)).await.unwrap();
        assert!(page.items.len() <= 10);
        names.extend(page.items.iter().map(|c| c.metadata.name.clone().unwrap()));
        next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
    }
    let expected: Vec<String> = (0..25).map(|i| format!("page-{i:02}")).collect();
    assert_eq!(names, expected);
    let err = api
        .list(&ListParams::default().continue_token("bogus"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 400),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflector_follows_changes() {
    let dir = tempfile::tempdir().unwrap();
    let m = Master::start(&dir.path().join("m"), &[]);
    let api: Api<ConfigMap> = Api::namespaced(m.client().await, "default");
    api.create(&PostParams::default(), &cm("before", &[("r", "yes")]))
        .await
        .unwrap();
    let (reader, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(api.clone(), watcher::Config::default().labels("r=yes")),
    )
    .applied_objects()
    .boxed();
    let task = tokio::spawn(async move {
        let _ = stream.try_for_each(|_| async { Ok(()) }).await;
    });
    reader.wait_until_ready().await.unwrap();
    let wait_for = |want: Vec<&'static str>| {
        let reader = reader.clone();
        async move {
            for _ in 0..200 {
                let mut have: Vec<String> = reader
                    .state()
                    .iter()
                    .map(|c| c.metadata.name.clone().unwrap())
                    .collect();
                have.sort();
                if have == want {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            false
        }
    };
    assert!(wait_for(vec!["before"]).await);
    api.create(&PostParams::default(), &cm("after", &[("r", "yes")]))
        .await
        .unwrap();
    api.create(&PostParams::default(), &cm("other", &[("r", "no")]))
        .await
        .unwrap();
    assert!(
        wait_for(vec!["after", "before"]).await,
        "{:?}",
        reader.state()
    );
    // Relabelling out of the selector looks like a delete to this watcher.
    api.patch(
        "after",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"r": "no"}}})),
    )
    .await
    .unwrap();
    assert!(wait_for(vec!["before"]).await);
    api.patch(
        "before",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "changed"}})),
    )
    .await
    .unwrap();
    for _ in 0..200 {
        if reader
            .get(&reflector::ObjectRef::new("before").within("default"))
            .is_some_and(|c| c.data.as_ref().unwrap()["k"] == "changed")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        reader
            .get(&reflector::ObjectRef::new("before").within("default"))
            .unwrap()
            .data
            .as_ref()
            .unwrap()["k"],
        "changed"
    );
    api.delete("before", &DeleteParams::default())
        .await
        .unwrap();
    assert!(wait_for(vec![]).await);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_a_too_old_revision_gets_410() {
    let dir = tempfile::tempdir().unwrap();
    let m = Master::start(&dir.path().join("m"), &[]);
    let api: Api<ConfigMap> = Api::namespaced(m.client().await, "default");
    let mut stream = api
        .watch(&WatchParams::default().timeout(5), "1")
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
    {
        Some(Ok(WatchEvent::Error(e))) => assert_eq!(e.code, 410, "{e:?}"),
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
}
