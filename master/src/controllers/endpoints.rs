//! Endpoints and EndpointSlices: every Service with a selector gets the addresses of the pods
//! it selects (ready ones as `addresses`, the rest as `notReadyAddresses`), with its ports
//! resolved against the pods' named container ports. Both carry an owner reference to the
//! Service, so deleting it deletes them.

use std::time::Duration;

use serde_json::{json, Value};

use super::{level_loop, pod_ready, res, terminating, triggers, Ctx, Informer};
use crate::selector::{labels_of as labels, selector_of};

fn target_port(port: &Value, pod: &Value) -> Option<i64> {
    match &port["targetPort"] {
        Value::Number(n) => n.as_i64(),
        Value::String(name) => pod["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
            .find(|p| p["name"] == name.as_str())
            .and_then(|p| p["containerPort"].as_i64()),
        _ => port["port"].as_i64(),
    }
}

/// Slice names written per Service uid, so a slice whose port set went away is deleted.
type Written = std::collections::HashMap<String, std::collections::BTreeSet<String>>;

/// The EndpointSlice name for one port set: `<svc>-podlet` for the first (most pods), then
/// `<svc>-podlet-<hash of the ports>`.
fn slice_name(svc: &str, first: bool, ports: &[Value]) -> String {
    if first {
        return format!("{svc}-podlet");
    }
    let h = ports
        .iter()
        .map(ToString::to_string)
        .collect::<String>()
        .bytes()
        .fold(2166136261u32, |h, b| (h ^ b as u32).wrapping_mul(16777619));
    format!("{svc}-podlet-{h:08x}")
}

/// Each pod's own numbers for the Service's ports (a named targetPort may differ from pod to
/// pod); pods with the same numbers share a subset and a slice, the largest group first. A
/// port a pod cannot resolve is left out for that pod, and a pod resolving none is left out.
fn group_by_ports<'a>(ports: &[Value], pods: &[&'a Value]) -> Vec<(Vec<Value>, Vec<&'a Value>)> {
    let mut groups: Vec<(Vec<Value>, Vec<&Value>)> = Vec::new();
    for p in pods {
        let resolved: Vec<Value> = ports
            .iter()
            .filter_map(|sp| {
                let tp = target_port(sp, p)?;
                Some(json!({"name": sp["name"], "port": tp, "protocol": sp["protocol"].as_str().unwrap_or("TCP")}))
            })
            .collect();
        if resolved.is_empty() && !ports.is_empty() {
            continue;
        }
        match groups.iter_mut().find(|(k, _)| *k == resolved) {
            Some((_, members)) => members.push(p),
            None => groups.push((resolved, vec![p])),
        }
    }
    groups.sort_by_key(|(_, members)| std::cmp::Reverse(members.len()));
    groups
}

async fn sync(ctx: &Ctx, svc: &Value, pods: &[std::sync::Arc<Value>], written: &mut Written) {
    if terminating(svc)
        || svc["spec"]["selector"]
            .as_object()
            .is_none_or(|m| m.is_empty())
    {
        return;
    }
    let ns = svc["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    let name = svc["metadata"]["name"].as_str().unwrap_or("").to_string();
    let uid = svc["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let Some(sel) = selector_of(&json!({"matchLabels": svc["spec"]["selector"]})) else {
        return;
    };
    let mut selected: Vec<&Value> = pods
        .iter()
        .map(|p| &**p)
        .filter(|p| {
            p["metadata"]["namespace"] == ns.as_str()
                && !terminating(p)
                && p["status"]["podIP"].is_string()
                && sel.matches(&labels(p))
        })
        .collect();
    selected.sort_by_key(|p| p["status"]["podIP"].as_str().unwrap_or("").to_string());
    let ports: Vec<Value> = svc["spec"]["ports"].as_array().cloned().unwrap_or_default();
    let mut groups = group_by_ports(&ports, &selected);
    // A pod whose `subdomain` names this Service is published under its `hostname`
    // (`<hostname>.<service>.<ns>.svc.<domain>`), as Kubernetes' controller does.
    let hostname = |p: &Value| {
        (p["spec"]["subdomain"] == name.as_str())
            .then(|| p["spec"]["hostname"].as_str().map(str::to_string))
            .flatten()
    };
    let addr = |p: &Value| {
        let mut a = json!({"ip": p["status"]["podIP"], "nodeName": p["spec"]["nodeName"],
        "targetRef": {"kind": "Pod", "namespace": ns, "name": p["metadata"]["name"], "uid": p["metadata"]["uid"]}});
        if let Some(h) = hostname(p) {
            a["hostname"] = json!(h);
        }
        a
    };
    let owner = json!([{"apiVersion": "v1", "kind": "Service", "name": name, "uid": svc["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}]);
    let subsets: Vec<Value> = groups
        .iter()
        .map(|(ep_ports, members)| {
            let ready: Vec<Value> = members
                .iter()
                .filter(|p| pod_ready(p))
                .map(|p| addr(p))
                .collect();
            let not_ready: Vec<Value> = members
                .iter()
                .filter(|p| !pod_ready(p))
                .map(|p| addr(p))
                .collect();
            let mut s = json!({"ports": ep_ports});
            if !ready.is_empty() {
                s["addresses"] = json!(ready);
            }
            if !not_ready.is_empty() {
                s["notReadyAddresses"] = json!(not_ready);
            }
            s
        })
        .collect();
    let ep = json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": ns, "ownerReferences": owner, "labels": svc["metadata"]["labels"]}, "subsets": subsets});
    upsert(ctx, "Endpoints", &ns, &name, ep, "subsets").await;
    // No pods: one empty slice, with the Service's own port numbers.
    if groups.is_empty() {
        let fallback: Vec<Value> = ports
            .iter()
            .map(|sp| json!({"name": sp["name"], "port": sp["port"], "protocol": sp["protocol"].as_str().unwrap_or("TCP")}))
            .collect();
        groups.push((fallback, Vec::new()));
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, (ep_ports, members)) in groups.iter().enumerate() {
        let endpoints: Vec<Value> = members
            .iter()
            .map(|p| {
                let mut e = json!({"addresses": [p["status"]["podIP"]], "conditions": {"ready": pod_ready(p), "serving": pod_ready(p), "terminating": false},
                            "nodeName": p["spec"]["nodeName"], "targetRef": {"kind": "Pod", "namespace": ns, "name": p["metadata"]["name"], "uid": p["metadata"]["uid"]}});
                if let Some(h) = hostname(p) {
                    e["hostname"] = json!(h);
                }
                e
            })
            .collect();
        let slice_name = slice_name(&name, i == 0, ep_ports);
        let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": slice_name, "namespace": ns, "ownerReferences": owner,
                         "labels": {"kubernetes.io/service-name": name, "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.podlet.io"}},
            "endpoints": endpoints, "ports": ep_ports});
        upsert(ctx, "EndpointSlice", &ns, &slice_name, slice, "endpoints").await;
        names.insert(slice_name);
    }
    let before = written.insert(uid, names.clone()).unwrap_or_default();
    for gone in before.difference(&names) {
        let _ = ctx
            .delete(res("EndpointSlice"), Some(&ns), gone, &json!({}))
            .await;
    }
}

/// Creates `obj`, or replaces it when its `field` (and ports) differ.
async fn upsert(ctx: &Ctx, kind: &str, ns: &str, name: &str, obj: Value, field: &str) {
    let r = res(kind);
    let path = super::path(r, Some(ns), Some(name), None);
    match ctx
        .request(axum::http::Method::GET, &path, "application/json", None)
        .await
    {
        Ok(cur) => {
            if cur[field] == obj[field] && cur["ports"] == obj["ports"] {
                return;
            }
            let mut next = obj;
            next["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"].clone();
            let _ = ctx.update(r, &next, None).await;
        }
        Err(_) => {
            let _ = ctx.create(r, Some(ns), &obj).await;
        }
    }
}

/// Runs the controller.
pub async fn run(ctx: Ctx, svcs: Informer, pods: Informer) {
    let trigger = triggers(&[&svcs, &pods]);
    let written = std::sync::Arc::new(tokio::sync::Mutex::new(Written::new()));
    level_loop(trigger, Duration::from_secs(10), || {
        let (ctx, svcs, pods, written) = (ctx.clone(), svcs.clone(), pods.clone(), written.clone());
        async move {
            let all = pods.list();
            let mut written = written.lock().await;
            let services = svcs.list();
            for s in &services {
                sync(&ctx, s, &all, &mut written).await;
            }
            // Deleted Services' slices go with them (owner references); forget them.
            let live: std::collections::HashSet<&str> = services
                .iter()
                .filter_map(|s| s["metadata"]["uid"].as_str())
                .collect();
            written.retain(|uid, _| live.contains(uid.as_str()));
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_with_different_numbers_for_a_named_port_get_their_own_group() {
        let pod = |name: &str, port: i64| {
            json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c",
                "ports": [{"name": "http", "containerPort": port}]}]}})
        };
        let (a, b, c) = (pod("a", 8080), pod("b", 9090), pod("c", 8080));
        let other = json!({"metadata": {"name": "d"}, "spec": {"containers": [{"name": "c"}]}});
        let ports = vec![json!({"name": "web", "port": 80, "targetPort": "http"})];
        let groups = group_by_ports(&ports, &[&a, &b, &c, &other]);
        let summary: Vec<(i64, Vec<&str>)> = groups
            .iter()
            .map(|(p, m)| {
                (
                    p[0]["port"].as_i64().unwrap(),
                    m.iter()
                        .map(|x| x["metadata"]["name"].as_str().unwrap())
                        .collect(),
                )
            })
            .collect();
        assert_eq!(summary, [(8080, vec!["a", "c"]), (9090, vec!["b"])]);
        assert_eq!(slice_name("web", true, &groups[0].0), "web-podlet");
        let second = slice_name("web", false, &groups[1].0);
        assert!(
            second.starts_with("web-podlet-") && second != slice_name("web", false, &groups[0].0)
        );
    }
}
