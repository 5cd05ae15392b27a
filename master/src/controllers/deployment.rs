//! The Deployment controller: one ReplicaSet per pod template (named and labelled with the
//! template's hash, carrying the `deployment.kubernetes.io/revision` that `kubectl rollout
//! history|undo` read), rolled out by `RollingUpdate` within `maxSurge`/`maxUnavailable` or by
//! `Recreate`; `paused` stops rollouts; old ReplicaSets beyond `revisionHistoryLimit` are
//! deleted; `status` and the `Available`/`Progressing` conditions are what `kubectl rollout
//! status` waits on (including `ProgressDeadlineExceeded`).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::{
    controlled_by, controller_of, level_loop, pod_ready, res, terminating, triggers, Ctx, Informer,
};
use crate::selector::{labels_of as labels, selector_of};

/// The revision annotation.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// The label that ties pods and ReplicaSets to one template.
pub const HASH_LABEL: &str = "pod-template-hash";

/// The template hash (FNV-1a of the canonical JSON), as a short lowercase string.
pub fn template_hash(template: &Value) -> String {
    let mut t = template.clone();
    if let Some(l) = t["metadata"]["labels"].as_object_mut() {
        l.remove(HASH_LABEL);
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in t.to_string().bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..10)
        .map(|i| ALPHABET[((h >> (i * 5)) % ALPHABET.len() as u64) as usize] as char)
        .collect()
}

/// Resolves an int-or-percent against `total` (percentages round up for surge, down for
/// unavailability).
pub fn int_or_percent(v: &Value, total: i64, round_up: bool, default: &str) -> i64 {
    let s = match v {
        Value::Number(n) => return n.as_i64().unwrap_or(0),
        Value::String(s) => s.as_str(),
        _ => default,
    };
    match s.strip_suffix('%').and_then(|p| p.parse::<f64>().ok()) {
        Some(p) => {
            let x = p * total as f64 / 100.0;
            (if round_up { x.ceil() } else { x.floor() }) as i64
        }
        None => s.parse().unwrap_or(0),
    }
}

fn revision(rs: &Value) -> i64 {
    rs["metadata"]["annotations"][REVISION]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn replicas(rs: &Value) -> i64 {
    rs["spec"]["replicas"].as_i64().unwrap_or(0)
}

async fn scale(ctx: &Ctx, rs: &Value, n: i64, dep_replicas: i64, max_surge: i64) {
    if replicas(rs) == n {
        return;
    }
    let patch = json!({"metadata": {"annotations": {"deployment.kubernetes.io/desired-replicas": dep_replicas.to_string(),
        "deployment.kubernetes.io/max-replicas": (dep_replicas + max_surge).to_string()}}, "spec": {"replicas": n}});
    let ns = rs["metadata"]["namespace"].as_str();
    if let Err(e) = ctx
        .patch(
            res("ReplicaSet"),
            ns,
            rs["metadata"]["name"].as_str().unwrap_or(""),
            None,
            &patch,
        )
        .await
    {
        tracing::debug!(error = %e, "scaling a replica set");
    }
}

fn condition(kind: &str, status: &str, reason: &str, message: &str, previous: &Value) -> Value {
    let now = crate::api::objects::now();
    let prev = previous
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == kind);
    let transition = match prev {
        Some(p) if p["status"] == status => p["lastTransitionTime"].clone(),
        _ => json!(now),
    };
    let update = match prev {
        Some(p) if p["status"] == status && p["reason"] == reason => p["lastUpdateTime"].clone(),
        _ => json!(now),
    };
    json!({"type": kind, "status": status, "reason": reason, "message": message,
           "lastUpdateTime": update, "lastTransitionTime": transition})
}

async fn sync_one(ctx: &Ctx, d: &Value, all_rs: &[Arc<Value>], pods: &[Arc<Value>]) {
    if terminating(d) {
        return;
    }
    let rs_res = res("ReplicaSet");
    let dep_res = res("Deployment");
    let uid = d["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let ns = d["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    let name = d["metadata"]["name"].as_str().unwrap_or("").to_string();
    let Some(sel) = selector_of(&d["spec"]["selector"]) else {
        return;
    };
    let want = d["spec"]["replicas"].as_i64().unwrap_or(1).max(0);
    // Owned ReplicaSets; orphans the selector matches are adopted.
    let mut owned: Vec<Value> = Vec::new();
    for rs in all_rs
        .iter()
        .filter(|r| r["metadata"]["namespace"] == ns.as_str())
    {
        if controlled_by(rs, &uid) {
            owned.push((**rs).clone());
        } else if controller_of(rs).is_none()
            && sel.matches(&labels(&rs["spec"]["template"]))
            && !terminating(rs)
        {
            let mut refs = rs["metadata"]["ownerReferences"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            refs.push(json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true}));
            if let Ok(r) = ctx
                .patch(
                    rs_res,
                    Some(&ns),
                    rs["metadata"]["name"].as_str().unwrap_or(""),
                    None,
                    &json!({"metadata": {"ownerReferences": refs}}),
                )
                .await
            {
                owned.push(r);
            }
        }
    }
    let template = &d["spec"]["template"];
    let hash = template_hash(template);
    let max_rev = owned.iter().map(revision).max().unwrap_or(0);
    let strategy = d["spec"]["strategy"]["type"]
        .as_str()
        .unwrap_or("RollingUpdate")
        .to_string();
    let max_surge = if strategy == "RollingUpdate" {
        int_or_percent(
            &d["spec"]["strategy"]["rollingUpdate"]["maxSurge"],
            want,
            true,
            "25%",
        )
    } else {
        0
    };
    let mut max_unavailable = if strategy == "RollingUpdate" {
        int_or_percent(
            &d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
            want,
            false,
            "25%",
        )
    } else {
        want
    };
    if max_surge == 0 && max_unavailable == 0 {
        max_unavailable = 1;
    }
    let paused = d["spec"]["paused"] == true;
    let mut new_rs = owned
        .iter()
        .find(|r| r["metadata"]["labels"][HASH_LABEL] == hash.as_str())
        .cloned();
    if new_rs.is_none() && !paused {
        let mut tmpl = template.clone();
        tmpl["metadata"]["labels"][HASH_LABEL] = json!(hash);
        let mut selector = d["spec"]["selector"].clone();
        selector["matchLabels"][HASH_LABEL] = json!(hash);
        let mut rs_labels = template["metadata"]["labels"].clone();
        rs_labels[HASH_LABEL] = json!(hash);
        let mut annotations = json!({REVISION: (max_rev + 1).to_string(),
            "deployment.kubernetes.io/desired-replicas": want.to_string(),
            "deployment.kubernetes.io/max-replicas": (want + max_surge).to_string()});
        if let Some(cause) = d["metadata"]["annotations"]["kubernetes.io/change-cause"].as_str() {
            annotations["kubernetes.io/change-cause"] = json!(cause);
        }
        let initial = if owned.iter().all(|r| replicas(r) == 0) && strategy == "RollingUpdate" {
            want.min(want + max_surge)
        } else {
            0
        };
        let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": format!("{name}-{hash}"), "namespace": ns, "labels": rs_labels, "annotations": annotations,
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true}]},
            "spec": {"replicas": initial, "selector": selector, "template": tmpl,
                     "minReadySeconds": d["spec"]["minReadySeconds"].as_i64().unwrap_or(0)}});
        match ctx.create(rs_res, Some(&ns), &rs).await {
            Ok(r) => {
                owned.push(r.clone());
                new_rs = Some(r);
            }
            Err(e) => {
                tracing::debug!(deployment = %name, error = %e, "creating a replica set");
                return;
            }
        }
    } else if let Some(rs) = &new_rs {
        // A rollback to an older template makes that ReplicaSet the newest revision.
        if revision(rs) < max_rev && !paused {
            let patch = json!({"metadata": {"annotations": {REVISION: (max_rev + 1).to_string()}}});
            if let Ok(r) = ctx
                .patch(
                    rs_res,
                    Some(&ns),
                    rs["metadata"]["name"].as_str().unwrap_or(""),
                    None,
                    &patch,
                )
                .await
            {
                owned.retain(|o| o["metadata"]["uid"] != r["metadata"]["uid"]);
                owned.push(r.clone());
                new_rs = Some(r);
            }
        }
    }
    let new_uid = new_rs
        .as_ref()
        .map(|r| r["metadata"]["uid"].clone())
        .unwrap_or(Value::Null);
    let olds: Vec<&Value> = owned
        .iter()
        .filter(|r| r["metadata"]["uid"] != new_uid)
        .collect();
    // Pods per ReplicaSet (observed).
    let rs_pods = |rs: &Value| -> (i64, i64) {
        let ruid = rs["metadata"]["uid"].as_str().unwrap_or("");
        let ps: Vec<&Arc<Value>> = pods
            .iter()
            .filter(|p| controlled_by(p, ruid) && !terminating(p))
            .collect();
        (
            ps.len() as i64,
            ps.iter().filter(|p| pod_ready(p)).count() as i64,
        )
    };
    if !paused {
        if let Some(nrs) = &new_rs {
            if strategy == "Recreate" {
                for o in &olds {
                    scale(ctx, o, 0, want, 0).await;
                }
                // Recreate waits until no old pod exists, terminating ones included (they
                // may still run until their agent has stopped them).
                let old_pods = pods.iter().any(|p| {
                    olds.iter()
                        .any(|o| controlled_by(p, o["metadata"]["uid"].as_str().unwrap_or("")))
                });
                if !old_pods {
                    scale(ctx, nrs, want, want, 0).await;
                }
            } else {
                // Kubernetes' rolling-update arithmetic. Pod counts are per ReplicaSet the
                // larger of its desired replicas and its observed pods (deletions and creations
                // lag), and "available" is its observed ready pods, capped by its replicas.
                let count = |r: &Value| replicas(r).max(rs_pods(r).0);
                let available = |r: &Value| rs_pods(r).1.min(replicas(r));
                let all_pods: i64 = owned.iter().map(count).sum();
                if replicas(nrs) > want {
                    // Scaled down: the new ReplicaSet never holds more than the Deployment wants.
                    scale(ctx, nrs, want, want, max_surge).await;
                } else if all_pods < want + max_surge && replicas(nrs) < want {
                    let up = (want + max_surge - all_pods).min(want - replicas(nrs));
                    scale(ctx, nrs, replicas(nrs) + up, want, max_surge).await;
                }
                let min_available = want - max_unavailable;
                let new_unavailable = (replicas(nrs) - available(nrs)).max(0);
                let all_desired: i64 = owned.iter().map(replicas).sum();
                let mut max_scaled_down = all_desired - min_available - new_unavailable;
                let mut olds_sorted: Vec<&&Value> = olds.iter().collect();
                olds_sorted.sort_by_key(|o| revision(o));
                // First the old ReplicaSets' unavailable pods, within the budget.
                let mut scaled: Vec<(String, i64)> = Vec::new();
                for o in &olds_sorted {
                    if max_scaled_down <= 0 {
                        break;
                    }
                    let unhealthy = (replicas(o) - available(o)).max(0).min(max_scaled_down);
                    if unhealthy > 0 {
                        scale(ctx, o, replicas(o) - unhealthy, want, max_surge).await;
                        scaled.push((
                            o["metadata"]["uid"].as_str().unwrap_or("").to_string(),
                            unhealthy,
                        ));
                        max_scaled_down -= unhealthy;
                    }
                }
                // Then available ones, keeping minAvailable.
                let already = |o: &Value| {
                    scaled
                        .iter()
                        .filter(|(u, _)| o["metadata"]["uid"] == u.as_str())
                        .map(|(_, n)| *n)
                        .sum::<i64>()
                };
                let available_total: i64 = owned.iter().map(available).sum();
                let mut budget = (available_total - min_available).min(max_scaled_down.max(0));
                for o in &olds_sorted {
                    if budget <= 0 {
                        break;
                    }
                    let current = replicas(o) - already(o);
                    let cut = current.min(budget);
                    if cut > 0 {
                        scale(ctx, o, current - cut, want, max_surge).await;
                        budget -= cut;
                    }
                }
            }
        }
        // History: old, empty ReplicaSets beyond the limit go (oldest first).
        let limit = d["spec"]["revisionHistoryLimit"].as_i64().unwrap_or(10);
        let mut empty: Vec<&&Value> = olds
            .iter()
            .filter(|o| replicas(o) == 0 && rs_pods(o).0 == 0)
            .collect();
        empty.sort_by_key(|o| revision(o));
        let excess = empty.len() as i64 - limit;
        for o in empty.into_iter().take(excess.max(0) as usize) {
            let _ = ctx
                .delete(
                    rs_res,
                    Some(&ns),
                    o["metadata"]["name"].as_str().unwrap_or(""),
                    &json!({"propagationPolicy": "Background"}),
                )
                .await;
        }
    }
    // Status.
    let (mut total, mut ready) = (0, 0);
    for r in &owned {
        let (c, rd) = rs_pods(r);
        total += c;
        ready += rd;
    }
    let (updated, updated_ready) = new_rs.as_ref().map(rs_pods).unwrap_or((0, 0));
    let available_ok = ready >= want - max_unavailable;
    let complete = updated == want && total == want && updated_ready == want;
    let prev = &d["status"]["conditions"];
    let progress_deadline = d["spec"]["progressDeadlineSeconds"].as_i64().unwrap_or(600);
    let prev_progress = prev
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Progressing")
        .cloned();
    let status_changed = d["status"]["updatedReplicas"].as_i64().unwrap_or(-1) != updated
        || d["status"]["readyReplicas"].as_i64().unwrap_or(-1) != ready
        || d["status"]["replicas"].as_i64().unwrap_or(-1) != total
        || d["status"]["observedGeneration"] != d["metadata"]["generation"];
    let progressing = if paused {
        condition(
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused",
            prev,
        )
    } else if complete {
        condition(
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            &format!(
                "ReplicaSet \"{}\" has successfully progressed.",
                new_rs
                    .as_ref()
                    .map(|r| r["metadata"]["name"].as_str().unwrap_or(""))
                    .unwrap_or("")
            ),
            prev,
        )
    } else {
        let last = prev_progress
            .as_ref()
            .and_then(|c| c["lastUpdateTime"].as_str())
            .and_then(|t| t.parse::<jiff::Timestamp>().ok());
        let stalled = !status_changed
            && last.is_some_and(|t| {
                jiff::Timestamp::now().as_second() - t.as_second() > progress_deadline
            });
        if stalled
            || prev_progress
                .as_ref()
                .is_some_and(|c| c["reason"] == "ProgressDeadlineExceeded" && !status_changed)
        {
            condition(
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                &format!("ReplicaSet \"{name}\" has timed out progressing."),
                prev,
            )
        } else {
            condition(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                &format!(
                    "ReplicaSet \"{}\" is progressing.",
                    new_rs
                        .as_ref()
                        .map(|r| r["metadata"]["name"].as_str().unwrap_or(""))
                        .unwrap_or("")
                ),
                prev,
            )
        }
    };
    let available = if available_ok {
        condition(
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            prev,
        )
    } else {
        condition(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            prev,
        )
    };
    let status = json!({
        "observedGeneration": d["metadata"]["generation"], "replicas": total, "updatedReplicas": updated,
        "readyReplicas": ready, "availableReplicas": ready, "unavailableReplicas": (want - ready).max(0),
        "conditions": [available, progressing],
    });
    let strip = |v: &Value| {
        let mut v = v.clone();
        for c in v["conditions"].as_array_mut().into_iter().flatten() {
            if let Some(m) = c.as_object_mut() {
                m.remove("lastUpdateTime");
                m.remove("lastTransitionTime");
            }
        }
        v
    };
    if strip(&status) != strip(&d["status"]) {
        let _ = ctx
            .patch(
                dep_res,
                Some(&ns),
                &name,
                Some("status"),
                &json!({"status": status}),
            )
            .await;
    }
    let rev = new_rs.as_ref().map(revision).unwrap_or(0);
    if rev > 0 && d["metadata"]["annotations"][REVISION].as_str() != Some(rev.to_string().as_str())
    {
        let _ = ctx
            .patch(
                dep_res,
                Some(&ns),
                &name,
                None,
                &json!({"metadata": {"annotations": {REVISION: rev.to_string()}}}),
            )
            .await;
    }
}

/// Runs the controller.
pub async fn run(ctx: Ctx, deps: Informer, rss: Informer, pods: Informer) {
    let trigger = triggers(&[&deps, &rss, &pods]);
    level_loop(trigger, Duration::from_secs(5), || {
        let (ctx, deps, rss, pods) = (ctx.clone(), deps.clone(), rss.clone(), pods.clone());
        async move {
            let all_rs = rss.list();
            let all_pods = pods.list();
            for d in deps.list() {
                sync_one(&ctx, &d, &all_rs, &all_pods).await;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surge_and_unavailability() {
        assert_eq!(int_or_percent(&json!("25%"), 10, true, "25%"), 3);
        assert_eq!(int_or_percent(&json!("25%"), 10, false, "25%"), 2);
        assert_eq!(int_or_percent(&json!(2), 10, true, "25%"), 2);
        assert_eq!(int_or_percent(&Value::Null, 4, true, "25%"), 1);
    }

    #[test]
    fn hashes_ignore_the_hash_label() {
        let t = json!({"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}});
        let mut with = t.clone();
        with["metadata"]["labels"][HASH_LABEL] = json!("x");
        assert_eq!(template_hash(&t), template_hash(&with));
        let mut other = t.clone();
        other["spec"]["containers"][0]["image"] = json!("i:2");
        assert_ne!(template_hash(&t), template_hash(&other));
        assert_eq!(template_hash(&t).len(), 10);
    }
}
