//! The ReplicaSet controller: each ReplicaSet gets exactly `replicas` active pods from its
//! template. It adopts orphan pods its selector matches, releases owned pods that no longer
//! match, creates and deletes the difference (unscheduled, pending and unready pods go first),
//! and reports `status`. Writes it has made but not seen yet ("expectations") are counted, so
//! a lagging informer never causes a second round of creates.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{
    controlled_by, controller_of, level_loop, pod_finished, pod_ready, res, terminating, triggers,
    Ctx, Informer,
};
use crate::selector::{labels_of as labels, selector_of};

/// Writes made but not yet observed, per ReplicaSet uid.
#[derive(Debug, Default)]
pub struct Expectations {
    creates: HashMap<String, HashMap<String, Instant>>,
    deletes: HashMap<String, HashMap<String, Instant>>,
}

/// How long an unobserved write is expected before it is given up.
const EXPECTATION_TTL: Duration = Duration::from_secs(15);

impl Expectations {
    fn settle(&mut self, uid: &str, seen: &HashSet<String>) -> (usize, HashSet<String>) {
        let now = Instant::now();
        let c = self.creates.entry(uid.to_string()).or_default();
        c.retain(|name, t| !seen.contains(name) && now.duration_since(*t) < EXPECTATION_TTL);
        let d = self.deletes.entry(uid.to_string()).or_default();
        d.retain(|name, t| seen.contains(name) && now.duration_since(*t) < EXPECTATION_TTL);
        (c.len(), d.keys().cloned().collect())
    }
}

fn owner_ref(kind: &str, api_version: &str, obj: &Value) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "name": obj["metadata"]["name"], "uid": obj["metadata"]["uid"],
           "controller": true, "blockOwnerDeletion": true})
}

/// Deletion preference: unscheduled, then pending, then not ready, then newest first.
fn deletion_rank(p: &Value) -> (u8, u8, u8, std::cmp::Reverse<String>) {
    (
        (!p["spec"]["nodeName"].as_str().is_none_or(str::is_empty)) as u8,
        (p["status"]["phase"] != "Pending") as u8,
        pod_ready(p) as u8,
        std::cmp::Reverse(
            p["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        ),
    )
}

async fn sync_one(ctx: &Ctx, rs: &Value, pods: &[Arc<Value>], exp: &mut Expectations) {
    let pod_res = res("Pod");
    let rs_res = res("ReplicaSet");
    let uid = rs["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let ns = rs["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    let name = rs["metadata"]["name"].as_str().unwrap_or("").to_string();
    let Some(sel) = selector_of(&rs["spec"]["selector"]) else {
        return;
    };
    let mut owned: Vec<Arc<Value>> = Vec::new();
    for p in pods
        .iter()
        .filter(|p| p["metadata"]["namespace"] == ns.as_str())
    {
        let matches = sel.matches(&labels(p));
        if controlled_by(p, &uid) {
            if matches {
                owned.push(p.clone());
            } else {
                // Release: remove our owner reference.
                let refs: Vec<Value> = p["metadata"]["ownerReferences"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|r| r["uid"] != uid.as_str())
                    .cloned()
                    .collect();
                let _ = ctx
                    .patch(
                        pod_res,
                        Some(&ns),
                        p["metadata"]["name"].as_str().unwrap_or(""),
                        None,
                        &json!({"metadata": {"ownerReferences": refs}}),
                    )
                    .await;
            }
        } else if matches
            && controller_of(p).is_none()
            && !terminating(p)
            && !pod_finished(p)
            && !terminating(rs)
        {
            // Adopt an orphan.
            let mut refs = p["metadata"]["ownerReferences"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            refs.push(owner_ref("ReplicaSet", "apps/v1", rs));
            if ctx
                .patch(
                    pod_res,
                    Some(&ns),
                    p["metadata"]["name"].as_str().unwrap_or(""),
                    None,
                    &json!({"metadata": {"ownerReferences": refs}}),
                )
                .await
                .is_ok()
            {
                owned.push(p.clone());
            }
        }
    }
    let seen: HashSet<String> = owned
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    let (pending_creates, pending_deletes) = exp.settle(&uid, &seen);
    let active: Vec<Arc<Value>> = owned
        .iter()
        .filter(|p| {
            !terminating(p)
                && !pod_finished(p)
                && !pending_deletes.contains(p["metadata"]["name"].as_str().unwrap_or(""))
        })
        .cloned()
        .collect();
    let want = if terminating(rs) {
        0
    } else {
        rs["spec"]["replicas"].as_i64().unwrap_or(1).max(0) as usize
    };
    let have = active.len() + pending_creates;
    if have < want {
        let template = &rs["spec"]["template"];
        let mut meta = template["metadata"].clone();
        if !meta.is_object() {
            meta = json!({});
        }
        meta["generateName"] = json!(format!("{name}-"));
        meta["namespace"] = json!(ns);
        meta["ownerReferences"] = json!([owner_ref("ReplicaSet", "apps/v1", rs)]);
        if let Some(m) = meta.as_object_mut() {
            m.remove("name");
        }
        let pod =
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"]});
        let mut made = Vec::new();
        let todo = want - have;
        let mut i = 0;
        while i < todo {
            let batch = (todo - i).min(16);
            let results =
                futures::future::join_all((0..batch).map(|_| ctx.create(pod_res, Some(&ns), &pod)))
                    .await;
            for r in results {
                match r {
                    Ok(p) => made.push(p["metadata"]["name"].as_str().unwrap_or("").to_string()),
                    Err(e) => tracing::debug!(replicaset = %name, error = %e, "creating a pod"),
                }
            }
            i += batch;
        }
        let c = exp.creates.entry(uid.clone()).or_default();
        for m in made {
            c.insert(m, Instant::now());
        }
    } else if have > want && pending_creates == 0 {
        let mut victims = active.clone();
        victims.sort_by_key(|p| deletion_rank(p));
        let d = exp.deletes.entry(uid.clone()).or_default();
        for p in victims.into_iter().take(have - want) {
            let pname = p["metadata"]["name"].as_str().unwrap_or("").to_string();
            match ctx.delete(pod_res, Some(&ns), &pname, &json!({})).await {
                Ok(_) => {
                    d.insert(pname, Instant::now());
                }
                Err(e) => tracing::debug!(pod = %pname, error = %e, "deleting a pod"),
            }
        }
    }
    // Status from what is observed.
    let ready = active.iter().filter(|p| pod_ready(p)).count();
    let template_labels = &rs["spec"]["template"]["metadata"]["labels"];
    let fully = active
        .iter()
        .filter(|p| {
            template_labels
                .as_object()
                .is_none_or(|m| m.iter().all(|(k, v)| p["metadata"]["labels"][k] == *v))
        })
        .count();
    let status = json!({
        "replicas": active.len(), "fullyLabeledReplicas": fully, "readyReplicas": ready,
        "availableReplicas": ready, "observedGeneration": rs["metadata"]["generation"],
    });
    let cur = &rs["status"];
    let same = [
        "replicas",
        "fullyLabeledReplicas",
        "readyReplicas",
        "availableReplicas",
        "observedGeneration",
    ]
    .iter()
    .all(|k| cur[*k].as_i64().unwrap_or(0) == status[*k].as_i64().unwrap_or(0));
    if !same && !terminating(rs) {
        let _ = ctx
            .patch(
                rs_res,
                Some(&ns),
                &name,
                Some("status"),
                &json!({"status": status}),
            )
            .await;
    }
}

/// Runs the controller.
pub async fn run(ctx: Ctx, rss: Informer, pods: Informer) {
    let trigger = triggers(&[&rss, &pods]);
    let exp = Arc::new(tokio::sync::Mutex::new(Expectations::default()));
    level_loop(trigger, Duration::from_secs(5), || {
        let (ctx, rss, pods, exp) = (ctx.clone(), rss.clone(), pods.clone(), exp.clone());
        async move {
            let all_pods = pods.list();
            let mut exp = exp.lock().await;
            for rs in rss.list() {
                sync_one(&ctx, &rs, &all_pods, &mut exp).await;
            }
        }
    })
    .await;
}
