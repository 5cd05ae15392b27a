//! Node lifecycle: a node whose Lease (`kube-node-lease/<node>`) has not been renewed for
//! [`GRACE`] gets `Ready=Unknown` and the `node.kubernetes.io/unreachable` taints; its pods
//! that do not tolerate `unreachable:NoExecute` are evicted (deleted) so their controllers
//! replace them on other nodes; a pod tolerating it for `tolerationSeconds` is evicted when
//! that runs out. When the Lease is renewed again, the taints are lifted.
//!
//! Defaults (chosen for fast failover without flapping on a loaded 2-core machine; kubelet
//! renews every 10 s in Kubernetes, podlet's agent every 2 s): grace 12 s (Kubernetes: 40 s),
//! eviction as soon as the taint is set for pods without a toleration (Kubernetes adds a
//! default 300 s toleration). A pod is therefore replaced elsewhere within about 15 s of its
//! node's last renewal.

use std::time::Duration;

use serde_json::{json, Value};

use super::{level_loop, res, terminating, triggers, Ctx, Informer};
use crate::controllers::scheduler::tolerates;

/// How long a Lease may go unrenewed before its node is considered lost.
pub const GRACE: Duration = Duration::from_secs(12);
/// The taint key of a lost node.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

fn seconds_since(ts: Option<&str>) -> Option<i64> {
    let t: jiff::Timestamp = ts?.parse().ok()?;
    Some(jiff::Timestamp::now().as_second() - t.as_second())
}

async fn pass(ctx: &Ctx, nodes: &Informer, leases: &Informer, pods: &Informer) {
    let node_res = res("Node");
    for n in nodes.list() {
        let name = n["metadata"]["name"].as_str().unwrap_or("").to_string();
        let lease = leases.get(&format!("kube-node-lease/{name}"));
        let last = lease
            .as_ref()
            .and_then(|l| {
                seconds_since(
                    l["spec"]["renewTime"]
                        .as_str()
                        .or(l["spec"]["acquireTime"].as_str()),
                )
            })
            .or_else(|| seconds_since(n["metadata"]["creationTimestamp"].as_str()))
            .unwrap_or(0);
        let lost = last > GRACE.as_secs() as i64;
        let taints: Vec<Value> = n["spec"]["taints"].as_array().cloned().unwrap_or_default();
        let tainted = taints.iter().any(|t| t["key"] == UNREACHABLE);
        if lost && !tainted {
            let mut new_taints: Vec<Value> = taints.clone();
            let now = crate::api::objects::now();
            new_taints.push(json!({"key": UNREACHABLE, "effect": "NoSchedule", "timeAdded": now}));
            new_taints.push(json!({"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": now}));
            let _ = ctx
                .patch(
                    node_res,
                    None,
                    &name,
                    None,
                    &json!({"spec": {"taints": new_taints}}),
                )
                .await;
            let mut conds: Vec<Value> = n["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for c in conds.iter_mut().filter(|c| c["type"] == "Ready") {
                c["status"] = json!("Unknown");
                c["reason"] = json!("NodeStatusUnknown");
                c["message"] = json!("Kubelet stopped posting node status.");
                c["lastTransitionTime"] = json!(now);
            }
            if !conds.iter().any(|c| c["type"] == "Ready") {
                conds.push(json!({"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown", "message": "Kubelet stopped posting node status.", "lastTransitionTime": now}));
            }
            let _ = ctx
                .patch(
                    node_res,
                    None,
                    &name,
                    Some("status"),
                    &json!({"status": {"conditions": conds}}),
                )
                .await;
            tracing::info!(node = %name, "node lost: lease not renewed");
        } else if !lost && tainted {
            let kept: Vec<Value> = taints
                .iter()
                .filter(|t| t["key"] != UNREACHABLE)
                .cloned()
                .collect();
            let _ = ctx
                .patch(
                    node_res,
                    None,
                    &name,
                    None,
                    &json!({"spec": {"taints": kept}}),
                )
                .await;
        }
        if lost {
            let taint = json!({"key": UNREACHABLE, "effect": "NoExecute"});
            for p in pods
                .list()
                .iter()
                .filter(|p| p["spec"]["nodeName"] == name.as_str() && !terminating(p))
            {
                let tol = &p["spec"]["tolerations"];
                let allowed = if tolerates(tol, &taint) {
                    // Tolerated for tolerationSeconds (forever without).
                    tol.as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|t| t["tolerationSeconds"].as_i64())
                        .max()
                        .map(|s| last - (GRACE.as_secs() as i64) < s)
                        .unwrap_or(true)
                } else {
                    false
                };
                if !allowed {
                    let ns = p["metadata"]["namespace"].as_str();
                    let pname = p["metadata"]["name"].as_str().unwrap_or("");
                    // The node is gone: nothing will stop the pod gracefully, so it is
                    // removed at once (the agent tears it down if the node comes back).
                    let _ = ctx
                        .delete(res("Pod"), ns, pname, &json!({"gracePeriodSeconds": 0}))
                        .await;
                    tracing::info!(node = %name, pod = %pname, "evicted from a lost node");
                }
            }
        }
    }
}

/// Runs the controller.
pub async fn run(ctx: Ctx, nodes: Informer, leases: Informer, pods: Informer) {
    let trigger = triggers(&[&nodes]);
    level_loop(trigger, Duration::from_secs(1), || {
        pass(&ctx, &nodes, &leases, &pods)
    })
    .await;
}
