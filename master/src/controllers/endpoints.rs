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

async fn sync(ctx: &Ctx, svc: &Value, pods: &[std::sync::Arc<Value>]) {
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
    let ready: Vec<Value> = selected
        .iter()
        .filter(|p| pod_ready(p))
        .map(|p| addr(p))
        .collect();
    let not_ready: Vec<Value> = selected
        .iter()
        .filter(|p| !pod_ready(p))
        .map(|p| addr(p))
        .collect();
    let ep_ports: Vec<Value> = ports
        .iter()
        .map(|sp| {
            let tp = selected.first().and_then(|p| target_port(sp, p)).or(sp["port"].as_i64());
            json!({"name": sp["name"], "port": tp, "protocol": sp["protocol"].as_str().unwrap_or("TCP")})
        })
        .collect();
    let owner = json!([{"apiVersion": "v1", "kind": "Service", "name": name, "uid": svc["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}]);
    let subsets = if selected.is_empty() {
        json!([])
    } else {
        let mut s = json!({"ports": ep_ports});
        if !ready.is_empty() {
            s["addresses"] = json!(ready);
        }
        if !not_ready.is_empty() {
            s["notReadyAddresses"] = json!(not_ready);
        }
        json!([s])
    };
    let ep = json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": ns, "ownerReferences": owner, "labels": svc["metadata"]["labels"]}, "subsets": subsets});
    upsert(ctx, "Endpoints", &ns, &name, ep, "subsets").await;
    let endpoints: Vec<Value> = selected
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
    let slice_name = format!("{name}-podlet");
    let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
        "metadata": {"name": slice_name, "namespace": ns, "ownerReferences": owner,
                     "labels": {"kubernetes.io/service-name": name, "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.podlet.io"}},
        "endpoints": endpoints, "ports": ep_ports});
    upsert(ctx, "EndpointSlice", &ns, &slice_name, slice, "endpoints").await;
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
    level_loop(trigger, Duration::from_secs(10), || {
        let (ctx, svcs, pods) = (ctx.clone(), svcs.clone(), pods.clone());
        async move {
            let all = pods.list();
            for s in svcs.list() {
                sync(&ctx, &s, &all).await;
            }
        }
    })
    .await;
}
