//! The API in-process (the real router and store, requests through `tower::ServiceExt`):
//! authorization of nodes and of the join token, request limits, and property tests that throw
//! arbitrary bodies and selectors at it — every answer is a Kubernetes `Status` or an object,
//! never a 500 or a panic, and nothing half-written is left behind.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use podlet_master::api::auth::Security;
use podlet_master::api::codec::Codec;
use podlet_master::api::server::{router, AppState, Inner};
use podlet_master::api::watch_cache::WatchCache;
use podlet_master::store::sqlite::SqliteStore;
use podlet_master::store::Store;
use proptest::prelude::*;
use serde_json::{json, Value};
use tower::ServiceExt;

struct Api {
    state: AppState,
    sec: Security,
    _dir: tempfile::TempDir,
}

async fn api() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let sec = Security::load_or_create(dir.path(), &[], "https://127.0.0.1:1").unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("state.db")).unwrap());
    let codec = Codec::new(Some(sec.encryption_key));
    for ns in ["default", "kube-node-lease"] {
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        store
            .create(
                &format!("/registry/core/namespaces/{ns}"),
                codec.encode(&obj).unwrap(),
            )
            .await
            .unwrap();
    }
    let cache = WatchCache::start(store.clone(), codec.clone())
        .await
        .unwrap();
    let state = Arc::new(Inner {
        store,
        codec,
        cache,
        tokens: Some(sec.tokens.clone()),
        address: "127.0.0.1:1".into(),
    });
    Api {
        state,
        sec,
        _dir: dir,
    }
}

impl Api {
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        ct: &str,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", ct);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = router(self.state.clone())
            .oneshot(req.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let code = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn admin(&self, method: &str, path: &str, body: Value) -> (StatusCode, Value) {
        let b = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        self.call(
            method,
            path,
            Some(&self.sec.admin_token),
            "application/json",
            b,
        )
        .await
    }

    /// `POST /podlet/v1/join` for `node` with `token`.
    async fn join(&self, token: &str, node: &str) -> (StatusCode, Value) {
        let body = json!({ "nodeName": node }).to_string().into_bytes();
        self.call(
            "POST",
            "/podlet/v1/join",
            Some(token),
            "application/json",
            body,
        )
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_may_only_write_their_own_objects() {
    let a = api().await;
    // No token, a bad token: 401. The join token only joins.
    assert_eq!(
        a.call("GET", "/api/v1/nodes", None, "application/json", vec![])
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        a.call(
            "GET",
            "/api/v1/nodes",
            Some("nope"),
            "application/json",
            vec![]
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        a.call(
            "GET",
            "/api/v1/nodes",
            Some(&a.sec.join_token),
            "application/json",
            vec![]
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    let (code, v) = a.join(&a.sec.join_token, "n1").await;
    assert_eq!(code, StatusCode::OK, "{v}");
    let n1 = v["token"].as_str().unwrap().to_string();
    let (_, v) = a.join(&a.sec.join_token, "n1").await;
    assert_eq!(
        v["token"],
        n1.as_str(),
        "joining again returns the same token"
    );
    assert_eq!(
        a.call(
            "POST",
            "/podlet/v1/join",
            Some(&n1),
            "application/json",
            br#"{"nodeName":"n2"}"#.to_vec()
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    let node = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
            .to_string()
            .into_bytes()
    };
    assert_eq!(
        a.call(
            "POST",
            "/api/v1/nodes",
            Some(&n1),
            "application/json",
            node("n1")
        )
        .await
        .0,
        StatusCode::CREATED
    );
    let (code, v) = a
        .call(
            "POST",
            "/api/v1/nodes",
            Some(&n1),
            "application/json",
            node("n2"),
        )
        .await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert_eq!(v["kind"], "Status");
    let lease = |name: &str| {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name}, "spec": {"holderIdentity": name}}).to_string().into_bytes()
    };
    assert_eq!(
        a.call(
            "POST",
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
            Some(&n1),
            "application/json",
            lease("n1")
        )
        .await
        .0,
        StatusCode::CREATED
    );
    assert_eq!(
        a.call(
            "POST",
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
            Some(&n1),
            "application/json",
            lease("n2")
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    // Pods: the node may update the status of pods bound to it, not others, and not create pods.
    for (name, on) in [("mine", "n1"), ("theirs", "n2")] {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"nodeName": on, "containers": [{"name": "c", "image": "busybox"}]}});
        assert_eq!(
            a.admin("POST", "/api/v1/namespaces/default/pods", pod)
                .await
                .0,
            StatusCode::CREATED
        );
    }
    let running = br#"{"status":{"phase":"Running"}}"#.to_vec();
    let (code, v) = a
        .call(
            "PATCH",
            "/api/v1/namespaces/default/pods/mine/status",
            Some(&n1),
            "application/merge-patch+json",
            running.clone(),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(v["status"]["phase"], "Running");
    assert_eq!(
        a.call(
            "PATCH",
            "/api/v1/namespaces/default/pods/theirs/status",
            Some(&n1),
            "application/merge-patch+json",
            running
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    // Moving its own pod to another node is refused too.
    let moved = br#"{"spec":{"nodeName":"n2"}}"#.to_vec();
    assert_eq!(
        a.call(
            "PATCH",
            "/api/v1/namespaces/default/pods/mine",
            Some(&n1),
            "application/merge-patch+json",
            moved
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "new"}, "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]}});
    assert_eq!(
        a.call(
            "POST",
            "/api/v1/namespaces/default/pods",
            Some(&n1),
            "application/json",
            pod.to_string().into_bytes()
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        a.call(
            "GET",
            "/api/v1/namespaces/default/secrets",
            Some(&n1),
            "application/json",
            vec![]
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        a.call(
            "GET",
            "/api/v1/namespaces/default/pods",
            Some(&n1),
            "application/json",
            vec![]
        )
        .await
        .0,
        StatusCode::OK
    );
    // Review findings, fixed: no reading through a patch's error, no spec writes by nodes,
    // subresources only take their own verbs, apply names must agree, a name joins once.
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"}, "data": {"password": "c2VjcmV0LXZhbHVl"}});
    assert_eq!(
        a.admin("POST", "/api/v1/namespaces/default/secrets", secret)
            .await
            .0,
        StatusCode::CREATED
    );
    for token in [&a.sec.join_token, &n1] {
        let (code, v) = a
            .call(
                "PATCH",
                "/api/v1/namespaces/default/secrets/db",
                Some(token),
                "application/json-patch+json",
                br#"[{"op":"move","from":"/data/password","path":"/kind"}]"#.to_vec(),
            )
            .await;
        assert_eq!(code, StatusCode::FORBIDDEN, "{v}");
        assert!(!v.to_string().contains("c2VjcmV0LXZhbHVl"), "{v}");
    }
    let relabel = br#"{"metadata":{"labels":{"app":"stolen"}}}"#.to_vec();
    assert_eq!(
        a.call(
            "PATCH",
            "/api/v1/namespaces/default/pods/mine",
            Some(&n1),
            "application/merge-patch+json",
            relabel
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    let untaint = br#"{"spec":{"unschedulable":true}}"#.to_vec();
    assert_eq!(
        a.call(
            "PATCH",
            "/api/v1/nodes/n1",
            Some(&n1),
            "application/merge-patch+json",
            untaint
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    let label_self = br#"{"metadata":{"labels":{"zone":"a"}}}"#.to_vec();
    assert_eq!(
        a.call(
            "PATCH",
            "/api/v1/nodes/n1",
            Some(&n1),
            "application/merge-patch+json",
            label_self
        )
        .await
        .0,
        StatusCode::OK
    );
    assert_eq!(
        a.admin(
            "DELETE",
            "/api/v1/namespaces/default/pods/mine/status",
            Value::Null
        )
        .await
        .0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        a.admin(
            "PUT",
            "/api/v1/namespaces/default/pods/mine/binding",
            json!({})
        )
        .await
        .0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    let other_name = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "fake"}})
        .to_string()
        .into_bytes();
    let (code, _) = a
        .call(
            "PATCH",
            "/api/v1/nodes/n3?fieldManager=x",
            Some(&a.sec.admin_token),
            "application/apply-patch+yaml",
            other_name,
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let (code, _) = a
        .call(
            "POST",
            "/podlet/v1/join",
            Some(&a.sec.join_token),
            "application/json",
            br#"{"nodeName":"n1"}"#.to_vec(),
        )
        .await;
    assert_eq!(code, StatusCode::CONFLICT, "n1 has joined already");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_read_only_the_secrets_config_maps_and_service_accounts_their_pods_reference() {
    let a = api().await;
    let (code, v) = a.join(&a.sec.join_token, "n1").await;
    assert_eq!(code, StatusCode::OK, "{v}");
    let n1 = v["token"].as_str().unwrap().to_string();
    for (kind, plural, name) in [
        ("Secret", "secrets", "env-secret"),
        ("Secret", "secrets", "vol-secret"),
        ("Secret", "secrets", "other-secret"),
        ("ConfigMap", "configmaps", "vol-cm"),
        ("ConfigMap", "configmaps", "other-cm"),
        ("Secret", "secrets", "pull-secret"),
        ("ServiceAccount", "serviceaccounts", "builder"),
        ("ServiceAccount", "serviceaccounts", "other-sa"),
    ] {
        let obj = json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": name}, "data": {}});
        let path = format!("/api/v1/namespaces/default/{plural}");
        assert_eq!(a.admin("POST", &path, obj).await.0, StatusCode::CREATED);
    }
    let pod = |name: &str, node: &str, secret: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {
            "nodeName": node,
            "serviceAccountName": if node == "n1" { "builder" } else { "other-sa" },
            "imagePullSecrets": if node == "n1" { json!([{"name": "pull-secret"}]) } else { json!([]) },
            "volumes": [{"name": "s", "secret": {"secretName": "vol-secret"}},
                        {"name": "c", "configMap": {"name": "vol-cm"}}],
            "containers": [{"name": "c", "image": "busybox", "env": [
                {"name": "X", "valueFrom": {"secretKeyRef": {"name": secret, "key": "k"}}}]}]}})
    };
    let pods = "/api/v1/namespaces/default/pods";
    assert_eq!(
        a.admin("POST", pods, pod("mine", "n1", "env-secret"))
            .await
            .0,
        StatusCode::CREATED
    );
    assert_eq!(
        a.admin("POST", pods, pod("theirs", "n2", "other-secret"))
            .await
            .0,
        StatusCode::CREATED
    );
    let get = |path: String| {
        let n1 = n1.clone();
        let a = &a;
        async move {
            a.call("GET", &path, Some(&n1), "application/json", vec![])
                .await
                .0
        }
    };
    for (plural, name, want) in [
        ("secrets", "env-secret", StatusCode::OK),
        ("secrets", "vol-secret", StatusCode::OK),
        ("configmaps", "vol-cm", StatusCode::OK),
        ("secrets", "pull-secret", StatusCode::OK),
        ("serviceaccounts", "builder", StatusCode::OK),
        // Referenced only by a pod on another node, or by nothing.
        ("secrets", "other-secret", StatusCode::FORBIDDEN),
        ("configmaps", "other-cm", StatusCode::FORBIDDEN),
        ("serviceaccounts", "other-sa", StatusCode::FORBIDDEN),
    ] {
        let code = get(format!("/api/v1/namespaces/default/{plural}/{name}")).await;
        assert_eq!(code, want, "{plural}/{name}");
    }
    // Lists and watches of Secrets and ConfigMaps stay closed to nodes.
    for path in [
        "/api/v1/namespaces/default/secrets",
        "/api/v1/namespaces/default/configmaps",
        "/api/v1/namespaces/default/serviceaccounts",
        "/api/v1/configmaps?watch=true",
    ] {
        assert_eq!(get(path.to_string()).await, StatusCode::FORBIDDEN, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bound_pods_terminate_gracefully_before_they_are_deleted() {
    let a = api().await;
    let (_, v) = a.join(&a.sec.join_token, "n1").await;
    let n1 = v["token"].as_str().unwrap().to_string();
    let pods = "/api/v1/namespaces/default/pods";
    let pod = |name: &str, node: Option<&str>| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
               "spec": {"nodeName": node, "terminationGracePeriodSeconds": 20,
                        "containers": [{"name": "c", "image": "busybox"}]}})
    };
    assert_eq!(
        a.admin("POST", pods, pod("bound", Some("n1"))).await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        a.admin("POST", pods, pod("pending", None)).await.0,
        StatusCode::CREATED
    );
    // Bound: marked, not removed; the grace period is the pod's.
    let (code, v) = a
        .admin("DELETE", &format!("{pods}/bound"), Value::Null)
        .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(v["metadata"]["deletionGracePeriodSeconds"], 20, "{v}");
    assert!(v["metadata"]["deletionTimestamp"].is_string());
    let (code, v) = a.admin("GET", &format!("{pods}/bound"), Value::Null).await;
    assert_eq!(
        code,
        StatusCode::OK,
        "a terminating pod must still exist: {v}"
    );
    // Deleting again may shorten the grace period, never lengthen it.
    let (_, v) = a
        .admin(
            "DELETE",
            &format!("{pods}/bound"),
            json!({"gracePeriodSeconds": 5}),
        )
        .await;
    assert_eq!(v["metadata"]["deletionGracePeriodSeconds"], 5, "{v}");
    let (_, v) = a
        .admin(
            "DELETE",
            &format!("{pods}/bound"),
            json!({"gracePeriodSeconds": 60}),
        )
        .await;
    assert_eq!(v["metadata"]["deletionGracePeriodSeconds"], 5, "{v}");
    // Its node finishes it with grace 0 (as the agent does after stopping it).
    let (code, v) = a
        .call(
            "DELETE",
            &format!("{pods}/bound?gracePeriodSeconds=0"),
            Some(&n1),
            "application/json",
            vec![],
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(
        a.admin("GET", &format!("{pods}/bound"), Value::Null)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    // Not bound to a node: nothing runs it, so it goes at once.
    assert_eq!(
        a.admin("DELETE", &format!("{pods}/pending"), Value::Null)
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        a.admin("GET", &format!("{pods}/pending"), Value::Null)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    // A malformed grace period names the problem.
    assert_eq!(
        a.admin("POST", pods, pod("bad", Some("n1"))).await.0,
        StatusCode::CREATED
    );
    let (code, v) = a
        .admin(
            "DELETE",
            &format!("{pods}/bad"),
            json!({"gracePeriodSeconds": -3}),
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("gracePeriodSeconds"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_bodies_get_status_errors() {
    let a = api().await;
    let huge = vec![b' '; 4 * 1024 * 1024];
    let (code, v) = a
        .call(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            Some(&a.sec.admin_token),
            "application/json",
            huge,
        )
        .await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(v["reason"], "RequestEntityTooLarge");
    let (code, v) = a
        .call(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            Some(&a.sec.admin_token),
            "application/json",
            b"{not json".to_vec(),
        )
        .await;
    assert_eq!(
        (code, v["kind"].as_str()),
        (StatusCode::BAD_REQUEST, Some("Status"))
    );
    let (code, _) = a
        .call(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            Some(&a.sec.admin_token),
            "application/vnd.kubernetes.protobuf",
            b"k8s\0".to_vec(),
        )
        .await;
    assert_eq!(code, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (code, v) = a
        .admin(
            "GET",
            "/api/v1/namespaces/default/configmaps?labelSelector=a%20in%20(",
            Value::Null,
        )
        .await;
    assert_eq!(
        (code, v["reason"].as_str()),
        (StatusCode::BAD_REQUEST, Some("BadRequest"))
    );
    let (code, _) = a.admin("GET", "/api/v1/nosuchthings", Value::Null).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, v) = a
        .admin(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            json!({"kind": "Secret", "metadata": {"name": "x"}}),
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{v}");
    let (code, list) = a
        .admin("GET", "/api/v1/namespaces/default/configmaps", Value::Null)
        .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        0,
        "nothing half-written"
    );
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-zA-Z0-9 ._/-]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("metadata".to_string()),
                    Just("name".to_string()),
                    Just("spec".to_string()),
                    Just("data".to_string()),
                    Just("kind".to_string()),
                    Just("apiVersion".to_string()),
                    Just("containers".to_string()),
                    Just("replicas".to_string()),
                    Just("labels".to_string()),
                    "[a-z]{1,6}"
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Collections the fuzzer posts to.
const COLLECTIONS: &[&str] = &[
    "/api/v1/namespaces/default/configmaps",
    "/api/v1/namespaces/default/pods",
    "/api/v1/namespaces/default/services",
    "/apis/apps/v1/namespaces/default/deployments",
    "/api/v1/nodes",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_bodies_never_break_the_api(body in arb_json(), which in 0..COLLECTIONS.len(), name in "[a-z][a-z0-9-]{0,10}") {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        rt.block_on(async {
            let a = api().await;
            let path = COLLECTIONS[which];
            // Raw arbitrary document, and the same under a valid name.
            let mut named = body.clone();
            if named.is_object() {
                named["metadata"] = json!({"name": name});
            }
            for doc in [body.clone(), named] {
                let (code, v) = a.admin("POST", path, doc).await;
                prop_assert!(code != StatusCode::INTERNAL_SERVER_ERROR, "500 for {path}: {v}");
                if code == StatusCode::CREATED {
                    prop_assert!(v["metadata"]["resourceVersion"].is_string());
                } else {
                    prop_assert_eq!(&v["kind"], "Status");
                }
                // Patching an existing object with arbitrary content is handled too.
                let (code, v) = a.call("PATCH", &format!("{path}/{name}"), Some(&a.sec.admin_token), "application/strategic-merge-patch+json", body.to_string().into_bytes()).await;
                prop_assert!(code != StatusCode::INTERNAL_SERVER_ERROR, "500 patching: {v}");
            }
            let (code, _) = a.admin("GET", path, Value::Null).await;
            prop_assert_eq!(code, StatusCode::OK);
            Ok(())
        })?;
    }

    #[test]
    fn arbitrary_selectors_are_answered_or_refused(labels in "[ -~]{0,24}", fields in "[ -~]{0,24}") {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        rt.block_on(async {
            let a = api().await;
            let enc = |s: &str| s.bytes().map(|b| format!("%{b:02X}")).collect::<String>();
            let path = format!("/api/v1/namespaces/default/configmaps?labelSelector={}&fieldSelector={}", enc(&labels), enc(&fields));
            let (code, v) = a.admin("GET", &path, Value::Null).await;
            prop_assert!(code == StatusCode::OK || code == StatusCode::BAD_REQUEST, "{code} {v}");
            Ok(())
        })?;
    }
}

async fn owner(a: &Api, name: &str) -> String {
    let (_, v) = a
        .admin(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            json!({"metadata": {"name": name}}),
        )
        .await;
    v["metadata"]["uid"].as_str().unwrap().to_string()
}

async fn wait_gone(a: &Api, path: &str) -> bool {
    for _ in 0..200 {
        if a.admin("GET", path, Value::Null).await.0 == StatusCode::NOT_FOUND {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalizers_and_owner_references_govern_deletion() {
    let a = api().await;
    let cms = "/api/v1/namespaces/default/configmaps";
    // A finalizer keeps the object, marked, until it is removed.
    let (code, _) = a
        .admin(
            "POST",
            cms,
            json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"]}}),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED);
    let (code, v) = a.admin("DELETE", &format!("{cms}/held"), Value::Null).await;
    assert_eq!(code, StatusCode::OK);
    assert!(v["metadata"]["deletionTimestamp"].is_string(), "{v}");
    let (code, v) = a.admin("GET", &format!("{cms}/held"), Value::Null).await;
    assert_eq!(code, StatusCode::OK, "still there: {v}");
    let (code, v) = a
        .call(
            "PATCH",
            &format!("{cms}/held"),
            Some(&a.sec.admin_token),
            "application/merge-patch+json",
            br#"{"metadata":{"finalizers":null}}"#.to_vec(),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert!(
        wait_gone(&a, &format!("{cms}/held")).await,
        "removing the last finalizer deletes it"
    );

    // Owner references: Background deletes dependents after the owner, Orphan keeps them.
    let dep = |name: &str, uid: &str| json!({"metadata": {"name": name, "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "o", "uid": uid}]}});
    let uid = owner(&a, "bg-owner").await;
    a.admin("POST", cms, dep("bg-child", &uid)).await;
    a.admin(
        "DELETE",
        &format!("{cms}/bg-owner"),
        json!({"propagationPolicy": "Background"}),
    )
    .await;
    assert!(
        wait_gone(&a, &format!("{cms}/bg-child")).await,
        "background deletion removes dependents"
    );
    let uid = owner(&a, "fg-owner").await;
    a.admin("POST", cms, dep("fg-child", &uid)).await;
    let (code, _) = a
        .admin(
            "DELETE",
            &format!("{cms}/fg-owner"),
            json!({"propagationPolicy": "Foreground"}),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        a.admin("GET", &format!("{cms}/fg-child"), Value::Null)
            .await
            .0,
        StatusCode::NOT_FOUND,
        "foreground: dependents first"
    );
    let uid = owner(&a, "or-owner").await;
    a.admin("POST", cms, dep("or-child", &uid)).await;
    a.admin(
        "DELETE",
        &format!("{cms}/or-owner"),
        json!({"propagationPolicy": "Orphan"}),
    )
    .await;
    let (code, v) = a
        .admin("GET", &format!("{cms}/or-child"), Value::Null)
        .await;
    assert_eq!(code, StatusCode::OK);
    assert!(
        v["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(|r| r.is_empty()),
        "{v}"
    );
    let (code, v) = a
        .admin(
            "DELETE",
            &format!("{cms}/or-child"),
            json!({"propagationPolicy": "Sideways"}),
        )
        .await;
    assert_eq!(
        (code, v["reason"].as_str()),
        (StatusCode::BAD_REQUEST, Some("BadRequest"))
    );
    // Preconditions.
    let (code, _) = a
        .admin(
            "DELETE",
            &format!("{cms}/or-child"),
            json!({"preconditions": {"uid": "not-it"}}),
        )
        .await;
    assert_eq!(code, StatusCode::CONFLICT);

    // generateName.
    let (code, v) = a
        .admin("POST", cms, json!({"metadata": {"generateName": "gen-"}}))
        .await;
    assert_eq!(code, StatusCode::CREATED);
    let name = v["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");

    // Deleting a namespace deletes what is in it, then the namespace.
    a.admin(
        "POST",
        "/api/v1/namespaces",
        json!({"metadata": {"name": "scratch"}}),
    )
    .await;
    a.admin(
        "POST",
        "/api/v1/namespaces/scratch/configmaps",
        json!({"metadata": {"name": "inside"}}),
    )
    .await;
    let (_, v) = a
        .admin("DELETE", "/api/v1/namespaces/scratch", Value::Null)
        .await;
    assert_eq!(v["status"]["phase"], "Terminating");
    assert!(wait_gone(&a, "/api/v1/namespaces/scratch").await);
    assert_eq!(
        a.admin(
            "GET",
            "/api/v1/namespaces/scratch/configmaps/inside",
            Value::Null
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    let (code, v) = a
        .admin(
            "POST",
            "/api/v1/namespaces/scratch/configmaps",
            json!({"metadata": {"name": "late"}}),
        )
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_watchers_share_one_store_watch() {
    let a = api().await;
    let (_, list) = a
        .admin("GET", "/api/v1/namespaces/default/configmaps", Value::Null)
        .await;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let mut bodies = Vec::new();
    for _ in 0..1000 {
        let req = Request::builder()
            .uri(format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}&timeoutSeconds=20"))
            .header("authorization", format!("Bearer {}", a.sec.admin_token))
            .body(Body::empty())
            .unwrap();
        let resp = router(a.state.clone()).oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        bodies.push(resp.into_body());
    }
    a.admin(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        json!({"metadata": {"name": "fanout"}}),
    )
    .await;
    let mut got = 0;
    for body in bodies {
        use http_body_util::BodyExt;
        let mut body = body;
        let frame = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let line = String::from_utf8_lossy(frame.data_ref().unwrap()).to_string();
        let ev: Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(
            (
                ev["type"].as_str(),
                ev["object"]["metadata"]["name"].as_str()
            ),
            (Some("ADDED"), Some("fanout"))
        );
        got += 1;
    }
    assert_eq!(got, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_addresses_are_allocated_once_and_released_with_their_service() {
    let a = api().await;
    let svcs = "/api/v1/namespaces/default/services";
    let svc = |name: &str, ip: Option<&str>, node_port: Option<i64>, port: i64| {
        let mut spec = json!({"type": "NodePort", "ports": [{"port": port}]});
        if let Some(ip) = ip {
            spec["clusterIP"] = json!(ip);
        }
        if let Some(np) = node_port {
            spec["ports"][0]["nodePort"] = json!(np);
        }
        json!({"metadata": {"name": name}, "spec": spec})
    };
    let (code, v) = a
        .admin("POST", svcs, svc("a", Some("10.43.5.5"), Some(30001), 80))
        .await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    // Taken values are refused, naming the field.
    let (code, v) = a
        .admin("POST", svcs, svc("b", Some("10.43.5.5"), None, 80))
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("already allocated"),
        "{v}"
    );
    let (code, v) = a.admin("POST", svcs, svc("b", None, Some(30001), 80)).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("spec.ports[0].nodePort"),
        "{v}"
    );
    // A refused Service and a dry run keep nothing.
    let (code, _) = a
        .admin("POST", svcs, svc("c", Some("10.43.6.6"), Some(30002), 0))
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    let (code, _) = a
        .admin(
            "POST",
            &format!("{svcs}?dryRun=All"),
            svc("d", Some("10.43.7.7"), Some(30003), 80),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED);
    for (name, ip, np) in [("c", "10.43.6.6", 30002), ("d", "10.43.7.7", 30003)] {
        let (code, v) = a
            .admin("POST", svcs, svc(name, Some(ip), Some(np), 80))
            .await;
        assert_eq!(code, StatusCode::CREATED, "{name}: {v}");
    }
    // Allocated ones are distinct and never the kubernetes or DNS addresses.
    let mut seen = std::collections::HashSet::new();
    for i in 0..40 {
        let (code, v) = a
            .admin("POST", svcs, svc(&format!("s{i}"), None, None, 80))
            .await;
        assert_eq!(code, StatusCode::CREATED, "{v}");
        let ip = v["spec"]["clusterIP"].as_str().unwrap().to_string();
        let np = v["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
        assert!(
            ip.starts_with("10.43.") && ip != "10.43.0.1" && ip != "10.43.0.10",
            "{ip}"
        );
        assert!(seen.insert(ip) && seen.insert(np.to_string()), "{v}");
    }
    // Deleted: the controller gives its values back.
    let ctx = podlet_master::controllers::Ctx {
        st: a.state.clone(),
    };
    let informer = ctx
        .informer(podlet_master::controllers::res("Service"))
        .await;
    let ranges = tokio::spawn(podlet_master::controllers::service_ranges::run(
        ctx, informer,
    ));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (code, _) = a.admin("DELETE", &format!("{svcs}/a"), Value::Null).await;
    assert_eq!(code, StatusCode::OK);
    let mut reused = false;
    for _ in 0..100 {
        let (code, _) = a
            .admin("POST", svcs, svc("a2", Some("10.43.5.5"), Some(30001), 80))
            .await;
        if code == StatusCode::CREATED {
            reused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    ranges.abort();
    assert!(
        reused,
        "the deleted Service's address and node port were not released"
    );
}
