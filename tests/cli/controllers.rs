//! Scheduler and controllers against the real `podlet master`, with simulated nodes: a harness
//! task per node registers its Node, renews its Lease every second and moves the pods bound to
//! it to Running and Ready (with an IP) — no mocked store, no mocked API. Stopping a harness is
//! a node failure.

#[path = "master_env.rs"]
mod master_env;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::Client;
use master_env::{micro_now, Master};
use serde_json::json;

/// A simulated node: registers, renews its Lease, runs (pretends to) the pods bound to it.
fn sim_node(c: Client, name: String, index: u8) -> tokio::task::JoinHandle<()> {
    sim_node_with_load(c, name, index, Arc::default())
}

/// A simulated node that also reports `load` (a CPU quantity) as every pod's CPU usage.
fn sim_node_with_load(
    c: Client,
    name: String,
    index: u8,
    load: Arc<Mutex<Option<String>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let nodes: Api<Node> = Api::all(c.clone());
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "status": {"capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                       "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                       "addresses": [{"type": "InternalIP", "address": format!("10.213.0.{}", index + 1)}]}
        })).unwrap();
        if nodes.create(&PostParams::default(), &node).await.is_err() {
            let _ = nodes
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": node.status})),
                )
                .await;
        }
        let leases: Api<Lease> = Api::namespaced(c.clone(), "kube-node-lease");
        let pods: Api<Pod> = Api::all(c.clone());
        let mut next_ip = 2u32;
        let mut ips: HashMap<String, String> = HashMap::new();
        loop {
            let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name},
                               "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": micro_now()}});
            let _ = leases
                .patch(
                    &name,
                    &PatchParams::apply("sim-node").force(),
                    &Patch::Apply(&lease),
                )
                .await;
            let mine = pods
                .list(&ListParams::default().fields(&format!("spec.nodeName={name}")))
                .await
                .map(|l| l.items)
                .unwrap_or_default();
            let report = load.lock().unwrap().clone();
            for p in mine {
                if p.metadata.deletion_timestamp.is_some() {
                    // Terminating: "stopped" at once, then finished with grace 0, as an agent
                    // does after its grace period.
                    let api: Api<Pod> = Api::namespaced(
                        c.clone(),
                        p.metadata.namespace.as_deref().unwrap_or("default"),
                    );
                    let _ = api
                        .delete(
                            p.metadata.name.as_deref().unwrap_or(""),
                            &kube::api::DeleteParams::default().grace_period(0),
                        )
                        .await;
                    continue;
                }
                if let Some(cpu) = &report {
                    let have = p
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get("metrics.podlet.io/cpu-usage"))
                        .cloned();
                    if have.as_deref() != Some(cpu.as_str()) {
                        let api: Api<Pod> = Api::namespaced(
                            c.clone(),
                            p.metadata.namespace.as_deref().unwrap_or("default"),
                        );
                        let _ = api.patch(p.metadata.name.as_deref().unwrap_or(""), &PatchParams::default(),
                            &Patch::Merge(json!({"metadata": {"annotations": {"metrics.podlet.io/cpu-usage": cpu}}}))).await;
                    }
                }
                let ready = p
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                if ready {
                    continue;
                }
                let pname = p.metadata.name.clone().unwrap();
                let ns = p.metadata.namespace.clone().unwrap();
                let ip = ips
                    .entry(format!("{ns}/{pname}"))
                    .or_insert_with(|| {
                        next_ip += 1;
                        format!("10.244.{index}.{}", next_ip)
                    })
                    .clone();
                let status = json!({"status": {"phase": "Running", "podIP": ip, "hostIP": format!("10.213.0.{}", index + 1),
                    "conditions": [{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}],
                    "containerStatuses": [{"name": "c", "ready": true, "restartCount": 0, "image": "x", "imageID": "", "state": {"running": {}}}]}});
                let api: Api<Pod> = Api::namespaced(c.clone(), &ns);
                let _ = api
                    .patch_status(&pname, &PatchParams::default(), &Patch::Merge(status))
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

/// Starts `n` simulated nodes and waits until the API has them all.
async fn nodes(c: &Client, n: u8) -> Vec<tokio::task::JoinHandle<()>> {
    let sims: Vec<_> = (0..n)
        .map(|i| sim_node(c.clone(), format!("node-{i}"), i))
        .collect();
    let api: Api<Node> = Api::all(c.clone());
    wait_until("the nodes to register", Duration::from_secs(20), || async {
        api.list(&ListParams::default())
            .await
            .map(|l| l.items.len() == n as usize)
            .unwrap_or(false)
    })
    .await;
    sims
}

fn deployment(name: &str, replicas: i32, image: &str) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "c", "image": image,
                                       "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}}
    })).unwrap()
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn image(p: &Pod) -> String {
    p.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

async fn running_pods(pods: &Api<Pod>, app: &str) -> Vec<Pod> {
    pods.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(ready)
        .collect()
}

fn kubectl(m: &Master, dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new("kubectl")
        .env("KUBECONFIG", m.kubeconfig())
        .env("HOME", dir)
        .args(args)
        .output()
        .expect("kubectl installed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_spread_roll_out_within_bounds_and_undo() {
    let dir = tempfile::tempdir().unwrap();
    let m = Master::start(&dir.path().join("m"), &[]);
    let c = m.client().await;
    let sims = nodes(&c, 3).await;
    let deps: Api<Deployment> = Api::namespaced(c.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    deps.create(&PostParams::default(), &deployment("web", 10, "web:1"))
        .await
        .unwrap();
    wait_until("10 running pods", Duration::from_secs(60), || async {
        running_pods(&pods, "web").await.len() == 10
    })
    .await;
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for p in running_pods(&pods, "web").await {
        *per_node
            .entry(p.spec.unwrap().node_name.unwrap())
            .or_default() += 1;
    }
    assert_eq!(per_node.len(), 3, "{per_node:?}");
    assert!(
        per_node.values().all(|n| (3..=4).contains(n)),
        "spread: {per_node:?}"
    );

    // Roll out a new image, checking maxSurge (3) and maxUnavailable (2) on every pod event.
    let rv = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let state: Arc<Mutex<HashMap<String, bool>>> = Arc::new(Mutex::new(
        pods.list(&ListParams::default().labels("app=web"))
            .await
            .unwrap()
            .items
            .iter()
            .map(|p| (p.metadata.name.clone().unwrap(), ready(p)))
            .collect(),
    ));
    let violations: Arc<Mutex<Vec<String>>> = Arc::default();
    let (st, vi, pw) = (state.clone(), violations.clone(), pods.clone());
    let checker = tokio::spawn(async move {
        let mut s = pw
            .watch(&WatchParams::default().labels("app=web").timeout(120), &rv)
            .await
            .unwrap()
            .boxed();
        while let Some(Ok(ev)) = s.next().await {
            let mut st = st.lock().unwrap();
            match ev {
                // Terminating pods no longer count (Kubernetes' maxSurge ignores them).
                WatchEvent::Added(p) | WatchEvent::Modified(p)
                    if p.metadata.deletion_timestamp.is_some() =>
                {
                    st.remove(&p.metadata.name.clone().unwrap());
                }
                WatchEvent::Added(p) | WatchEvent::Modified(p) => {
                    st.insert(p.metadata.name.clone().unwrap(), ready(&p));
                }
                WatchEvent::Deleted(p) => {
                    st.remove(&p.metadata.name.clone().unwrap());
                }
                _ => continue,
            }
            let total = st.len();
            let ready_count = st.values().filter(|r| **r).count();
            if total > 13 || ready_count < 8 {
                vi.lock()
                    .unwrap()
                    .push(format!("{total} pods, {ready_count} ready"));
            }
        }
    });
    deps.patch("web", &PatchParams::default(), &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "web:2"}]}}}}))).await.unwrap();
    wait_until("the rollout to web:2", Duration::from_secs(90), || async {
        let all = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .unwrap()
            .items;
        all.len() == 10 && all.iter().all(|p| image(p) == "web:2" && ready(p))
    })
    .await;
    let out = kubectl(
        &m,
        dir.path(),
        &["rollout", "status", "deployment/web", "--timeout=60s"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("successfully rolled out"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    checker.abort();
    let v = violations.lock().unwrap().clone();
    assert!(v.is_empty(), "rollout bounds broken: {v:?}");
    let rss: Api<ReplicaSet> = Api::namespaced(c.clone(), "default");
    assert_eq!(
        rss.list(&ListParams::default().labels("app=web"))
            .await
            .unwrap()
            .items
            .len(),
        2
    );

    // kubectl rollout history / undo returns to the previous template.
    let out = kubectl(&m, dir.path(), &["rollout", "history", "deployment/web"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains('1') && text.contains('2'),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kubectl(&m, dir.path(), &["rollout", "undo", "deployment/web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("the undo to web:1", Duration::from_secs(90), || async {
        let all = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .unwrap()
            .items;
        all.len() == 10 && all.iter().all(|p| image(p) == "web:1" && ready(p))
    })
    .await;
    let out = kubectl(&m, dir.path(), &["scale", "deployment/web", "--replicas=4"]);
    assert!(out.status.success());
    wait_until("4 pods", Duration::from_secs(60), || async {
        pods.list(&ListParams::default().labels("app=web"))
            .await
            .unwrap()
            .items
            .len()
            == 4
    })
    .await;

    // Endpoints follow the ready pods of a Service.
    let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
    )
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Service>::namespaced(c.clone(), "default")
        .create(&PostParams::default(), &svc)
        .await
        .unwrap();
    let eps: Api<Endpoints> = Api::namespaced(c.clone(), "default");
    wait_until("4 endpoint addresses", Duration::from_secs(30), || async {
        eps.get("web")
            .await
            .ok()
            .and_then(|e| e.subsets)
            .and_then(|s| s.first().cloned())
            .and_then(|s| s.addresses)
            .map(|a| a.len())
            == Some(4)
    })
    .await;

    // Deleting the Deployment deletes its ReplicaSets and pods.
    deps.delete("web", &DeleteParams::default()).await.unwrap();
    wait_until(
        "no replica sets or pods",
        Duration::from_secs(30),
        || async {
            rss.list(&ListParams::default().labels("app=web"))
                .await
                .unwrap()
                .items
                .is_empty()
                && pods
                    .list(&ListParams::default().labels("app=web"))
                    .await
                    .unwrap()
                    .items
                    .is_empty()
        },
    )
    .await;
    for s in sims {
        s.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_node_has_its_pods_recreated_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let m = Master::start(&dir.path().join("m"), &[]);
    let c = m.client().await;
    let mut sims = nodes(&c, 3).await;
    let deps: Api<Deployment> = Api::namespaced(c.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    deps.create(&PostParams::default(), &deployment("app", 6, "app:1"))
        .await
        .unwrap();
    wait_until("6 running pods", Duration::from_secs(60), || async {
        running_pods(&pods, "app").await.len() == 6
    })
    .await;
    let on_lost = running_pods(&pods, "app")
        .await
        .iter()
        .filter(|p| p.spec.as_ref().unwrap().node_name.as_deref() == Some("node-2"))
        .count();
    assert!(on_lost > 0);
    // node-2 stops renewing its Lease.
    sims.pop().unwrap().abort();
    let lost_at = Instant::now();
    wait_until(
        "6 running pods on the surviving nodes",
        Duration::from_secs(45),
        || async {
            let run = running_pods(&pods, "app").await;
            run.len() == 6
                && run
                    .iter()
                    .all(|p| p.spec.as_ref().unwrap().node_name.as_deref() != Some("node-2"))
        },
    )
    .await;
    let took = lost_at.elapsed();
    assert!(took < Duration::from_secs(30), "failover took {took:?}");
    let node: Node = Api::all(c.clone()).get("node-2").await.unwrap();
    let taints = node.spec.unwrap().taints.unwrap_or_default();
    assert!(taints
        .iter()
        .any(|t| t.key == "node.kubernetes.io/unreachable" && t.effect == "NoExecute"));
    let cond = node
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(cond.status, "Unknown");
    for s in sims {
        s.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unschedulable_pod_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let m = Master::start(&dir.path().join("m"), &[]);
    let c = m.client().await;
    let sims = nodes(&c, 3).await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let huge: Pod = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "huge"},
        "spec": {"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "100"}}}]}})).unwrap();
    pods.create(&PostParams::default(), &huge).await.unwrap();
    wait_until("PodScheduled=False", Duration::from_secs(30), || async {
        let p = pods.get("huge").await.unwrap();
        p.status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
                    && c.message.as_deref() == Some("0/3 nodes are available: 3 Insufficient cpu.")
            })
    })
    .await;
    for s in sims {
        s.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_autoscaler_scales_up_on_cpu_and_back_down_after_the_window() {
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    let dir = tempfile::tempdir().unwrap();
    let m = Master::start(&dir.path().join("m"), &[]);
    let c = m.client().await;
    let load: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(Some("100m".into())));
    let sims: Vec<_> = (0..3)
        .map(|i| sim_node_with_load(c.clone(), format!("node-{i}"), i, load.clone()))
        .collect();
    let deps: Api<Deployment> = Api::namespaced(c.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    deps.create(&PostParams::default(), &deployment("busy", 2, "busy:1"))
        .await
        .unwrap();
    wait_until("2 running pods", Duration::from_secs(60), || async {
        running_pods(&pods, "busy").await.len() == 2
    })
    .await;
    let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "busy"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "busy"},
                 "minReplicas": 2, "maxReplicas": 7,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}],
                 "behavior": {"scaleDown": {"stabilizationWindowSeconds": 6}}}
    })).unwrap();
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(c.clone(), "default");
    hpas.create(&PostParams::default(), &hpa).await.unwrap();
    // 100m used of 100m requested: 200% of the 50% target → 2 × 4 = 8, capped at 7.
    *load.lock().unwrap() = Some("100m".into());
    wait_until("7 replicas", Duration::from_secs(60), || async {
        deps.get("busy").await.unwrap().spec.replicas == Some(7)
    })
    .await;
    wait_until("7 running pods", Duration::from_secs(60), || async {
        running_pods(&pods, "busy").await.len() == 7
    })
    .await;
    let status = hpas.get("busy").await.unwrap().status.unwrap();
    assert_eq!(status.desired_replicas, 7);
    // Idle: 5% → down to the minimum, but not before the stabilization window has passed.
    *load.lock().unwrap() = Some("5m".into());
    let idle_at = Instant::now();
    wait_until("2 replicas", Duration::from_secs(60), || async {
        deps.get("busy").await.unwrap().spec.replicas == Some(2)
    })
    .await;
    assert!(
        idle_at.elapsed() >= Duration::from_secs(5),
        "scaled down after {:?}, inside the 6 s window",
        idle_at.elapsed()
    );
    for s in sims {
        s.abort();
    }
}

fn podlet(m: &Master, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_podlet"))
        .args(args)
        .arg("--kubeconfig")
        .arg(m.kubeconfig())
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podlet_client_commands_drive_a_rollout() {
    let dir = tempfile::tempdir().unwrap();
    let m = Master::start(&dir.path().join("m"), &[]);
    let c = m.client().await;
    let sims = nodes(&c, 2).await;
    let manifest = dir.path().join("app.yaml");
    std::fs::write(&manifest, "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: site\nspec:\n  replicas: 3\n  selector:\n    matchLabels: {app: site}\n  template:\n    metadata:\n      labels: {app: site}\n    spec:\n      containers:\n      - {name: c, image: 'site:1', resources: {requests: {cpu: 100m}}}\n").unwrap();
    let ok = |args: &[&str]| {
        let out = podlet(&m, args);
        assert!(
            out.status.success(),
            "podlet {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        ok(&["apply", "-f", manifest.to_str().unwrap()]).contains("deployment.apps/site created")
    );
    assert!(
        ok(&["rollout", "status", "deployment/site", "--timeout", "60"])
            .contains("successfully rolled out")
    );
    let table = ok(&["get", "pods", "-o", "wide"]);
    assert!(
        table.starts_with("NAME") && table.contains("Running") && table.contains("NODE"),
        "{table}"
    );
    assert_eq!(table.lines().count(), 4, "{table}");
    std::fs::write(
        &manifest,
        std::fs::read_to_string(&manifest)
            .unwrap()
            .replace("site:1", "site:2"),
    )
    .unwrap();
    assert!(ok(&["apply", "-f", manifest.to_str().unwrap()]).contains("serverside-applied"));
    ok(&["rollout", "status", "deployment/site", "--timeout", "60"]);
    let history = ok(&["rollout", "history", "deployment/site"]);
    assert!(
        history.contains("\n1 ") && history.contains("\n2 "),
        "{history}"
    );
    assert!(ok(&["rollout", "undo", "deployment/site"]).contains("rolled back"));
    ok(&["rollout", "status", "deployment/site", "--timeout", "60"]);
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    wait_until("site:1 again", Duration::from_secs(60), || async {
        let all = pods
            .list(&ListParams::default().labels("app=site"))
            .await
            .unwrap()
            .items;
        all.len() == 3 && all.iter().all(|p| image(p) == "site:1")
    })
    .await;
    ok(&["scale", "deployment/site", "--replicas", "1"]);
    wait_until("1 pod", Duration::from_secs(60), || async {
        pods.list(&ListParams::default().labels("app=site"))
            .await
            .unwrap()
            .items
            .len()
            == 1
    })
    .await;
    let described = ok(&["describe", "deployment", "site"]);
    assert!(
        described.contains("Name:         site")
            && described.contains("app: site")
            && described.contains("Replicas: 1"),
        "{described}"
    );
    let out = podlet(&m, &["get", "nosuchkind"]);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("doesn't have a resource type")
    );
    assert!(ok(&["delete", "deployment", "site"]).contains("deleted"));
    for s in sims {
        s.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_masters_on_etcd_leads_and_the_other_takes_over() {
    use k8s_openapi::api::coordination::v1::Lease;
    let etcd = podlet_testkit::etcd::Etcd::start().expect("etcd installed");
    assert!(etcd.wait_ready(), "etcd: {}", etcd.log());
    let dir = tempfile::tempdir().unwrap();
    let mut first = Master::start(
        &dir.path().join("m1"),
        &["--etcd-endpoints", &etcd.endpoint],
    );
    let token = std::fs::read_to_string(first.data.join("cluster-token")).unwrap();
    let second = Master::start(
        &dir.path().join("m2"),
        &["--etcd-endpoints", &etcd.endpoint, "--token", token.trim()],
    );
    let c2 = second.client().await;
    let leases: Api<Lease> = Api::namespaced(c2.clone(), "kube-system");
    wait_until("a leader", Duration::from_secs(20), || async {
        leases
            .get("podlet-controller-manager")
            .await
            .ok()
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
            .is_some_and(|h| !h.is_empty())
    })
    .await;
    let sims = nodes(&c2, 2).await;
    let deps: Api<Deployment> = Api::namespaced(c2.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(c2.clone(), "default");
    deps.create(&PostParams::default(), &deployment("ha", 2, "ha:1"))
        .await
        .unwrap();
    wait_until("2 running pods", Duration::from_secs(60), || async {
        running_pods(&pods, "ha").await.len() == 2
    })
    .await;
    // Exactly two pods: the two masters did not both run a ReplicaSet controller.
    assert_eq!(
        pods.list(&ListParams::default().labels("app=ha"))
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    // Kill the first master (it may or may not be the leader); the survivor leads afterwards.
    first.kill9();
    deps.patch(
        "ha",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 3}})),
    )
    .await
    .unwrap();
    wait_until(
        "3 running pods after the failover",
        Duration::from_secs(45),
        || async { running_pods(&pods, "ha").await.len() == 3 },
    )
    .await;
    let now = leases
        .get("podlet-controller-manager")
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity
        .unwrap();
    assert!(!now.is_empty());
    for s in sims {
        s.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_pause_resume_and_progress_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let m = Master::start(&dir.path().join("m"), &[]);
    let c = m.client().await;
    let sims = nodes(&c, 2).await;
    let deps: Api<Deployment> = Api::namespaced(c.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let mut dv = serde_json::to_value(deployment("rc", 3, "rc:1")).unwrap();
    dv["spec"]["strategy"] = json!({"type": "Recreate"});
    let d: Deployment = serde_json::from_value(dv).unwrap();
    deps.create(&PostParams::default(), &d).await.unwrap();
    wait_until("3 running pods", Duration::from_secs(60), || async {
        running_pods(&pods, "rc").await.len() == 3
    })
    .await;
    // Paused: a template change does not roll out.
    let out = kubectl(&m, dir.path(), &["rollout", "pause", "deployment/rc"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    deps.patch("rc", &PatchParams::default(), &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "rc:2"}]}}}}))).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let all = pods
        .list(&ListParams::default().labels("app=rc"))
        .await
        .unwrap()
        .items;
    assert!(
        all.len() == 3 && all.iter().all(|p| image(p) == "rc:1"),
        "rolled out while paused"
    );
    // Resumed with Recreate: old pods all go before any new one exists.
    let rv = pods
        .list(&ListParams::default().labels("app=rc"))
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mixed: Arc<Mutex<bool>> = Arc::default();
    let (mx, pw) = (mixed.clone(), pods.clone());
    let watch = tokio::spawn(async move {
        let mut alive: HashMap<String, String> = HashMap::new();
        let mut s = pw
            .watch(&WatchParams::default().labels("app=rc").timeout(60), &rv)
            .await
            .unwrap()
            .boxed();
        for p in pw
            .list(&ListParams::default().labels("app=rc"))
            .await
            .unwrap()
            .items
        {
            alive.insert(p.metadata.name.clone().unwrap(), image(&p));
        }
        while let Some(Ok(ev)) = s.next().await {
            match ev {
                WatchEvent::Added(p) | WatchEvent::Modified(p) => {
                    alive.insert(p.metadata.name.clone().unwrap(), image(&p));
                }
                WatchEvent::Deleted(p) => {
                    alive.remove(&p.metadata.name.clone().unwrap());
                }
                _ => {}
            }
            let images: std::collections::HashSet<&String> = alive.values().collect();
            if images.len() > 1 {
                *mx.lock().unwrap() = true;
            }
        }
    });
    let out = kubectl(&m, dir.path(), &["rollout", "resume", "deployment/rc"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("rc:2 everywhere", Duration::from_secs(60), || async {
        let run = running_pods(&pods, "rc").await;
        run.len() == 3 && run.iter().all(|p| image(p) == "rc:2")
    })
    .await;
    watch.abort();
    assert!(
        !*mixed.lock().unwrap(),
        "Recreate ran old and new pods together"
    );

    // A rollout that cannot progress reports ProgressDeadlineExceeded, and rollout status fails.
    let mut sv = serde_json::to_value(deployment("stuck", 1, "stuck:1")).unwrap();
    sv["spec"]["progressDeadlineSeconds"] = json!(3);
    sv["spec"]["template"]["spec"]["nodeSelector"] = json!({"disk": "nvme"});
    let stuck: Deployment = serde_json::from_value(sv).unwrap();
    deps.create(&PostParams::default(), &stuck).await.unwrap();
    wait_until(
        "ProgressDeadlineExceeded",
        Duration::from_secs(30),
        || async {
            let d = serde_json::to_value(deps.get("stuck").await.unwrap()).unwrap();
            d["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| {
                    c["type"] == "Progressing"
                        && c["status"] == "False"
                        && c["reason"] == "ProgressDeadlineExceeded"
                })
        },
    )
    .await;
    let out = kubectl(
        &m,
        dir.path(),
        &["rollout", "status", "deployment/stuck", "--timeout=20s"],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exceeded its progress deadline"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for s in sims {
        s.abort();
    }
}
