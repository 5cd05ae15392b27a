//! Running the pods bound to this node: a watch on `pods` with `spec.nodeName=<node>` feeds one
//! worker per pod (kubelet's pod workers): each holds the latest spec, syncs it to the engine
//! at once on a change and every second otherwise (level-triggered: restarts, probes, volume
//! updates), and patches `pods/status` when the status changes. A pod that disappears from the
//! API is torn down; after the first list, sandboxes of pods the API no longer has (deleted
//! while the agent was down) are torn down too.

pub mod convert;
pub mod eviction;
pub mod naming;
pub mod probes;
pub mod pull_secrets;
pub mod refs;
pub mod volumes;
pub mod worker;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::watcher;
use serde_json::Value;
use tokio::sync::watch;

use self::worker::{PodRuntime, SyncContext};

/// How often a pod is re-synced without a change.
pub const RESYNC: Duration = Duration::from_secs(1);

/// Keeps each condition's `lastTransitionTime` from `old` while its status is unchanged, so
/// that a status only differs (and is only written) when something really changed.
fn keep_transition_times(new: &mut Value, old: Option<&Value>) {
    let Some(old) = old else { return };
    let Some(conds) = new["conditions"].as_array_mut() else {
        return;
    };
    for c in conds {
        let before = old["conditions"]
            .as_array()
            .and_then(|a| a.iter().find(|o| o["type"] == c["type"]));
        if let Some(b) = before.filter(|b| b["status"] == c["status"]) {
            c["lastTransitionTime"] = b["lastTransitionTime"].clone();
        }
    }
}

fn grace_of(pod: &Pod) -> Duration {
    let secs = pod
        .metadata
        .deletion_grace_period_seconds
        .or(pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds))
        .unwrap_or(30);
    Duration::from_secs(secs.max(0) as u64)
}

async fn worker(client: kube::Client, ctx: SyncContext, mut rx: watch::Receiver<Option<Arc<Pod>>>) {
    let mut rt = Some(PodRuntime::default());
    let mut last_status: Option<Value> = None;
    let mut last_pod: Option<Arc<Pod>> = None;
    let mut last_refs = refs::Refs::default();
    loop {
        let current = rx.borrow_and_update().clone();
        let pod = match current {
            Some(p) => p,
            None => {
                if let Some(p) = last_pod {
                    stop(&ctx, &p, grace_of(&p)).await;
                    tracing::info!(pod = ?p.metadata.name, "pod removed");
                }
                return;
            }
        };
        let name = pod.metadata.name.clone().unwrap_or_default();
        let ns = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        if pod.metadata.deletion_timestamp.is_some() {
            // Graceful deletion: stop, then let the API forget the pod.
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            stop(&ctx, &pod, grace_of(&pod)).await;
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(kube::api::Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            let _ = api.delete(&name, &dp).await;
            return;
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let evicted = ctx
            .evictions
            .lock()
            .map(|e| e.contains(&uid))
            .unwrap_or(false);
        if evicted {
            evict(&api, &ctx, &pod, last_status.as_ref()).await;
            // The pod is finished: wait for its removal, doing nothing more.
            while rx.changed().await.is_ok() {
                if rx.borrow().is_none() {
                    break;
                }
            }
            if let Ok(mut e) = ctx.evictions.lock() {
                e.remove(&uid);
            }
            return;
        }
        match refs::fetch(&client, &pod).await {
            Ok(r) => last_refs = r,
            Err(e) => {
                tracing::warn!(pod = %name, error = %e, "reading the pod's ConfigMaps and Secrets")
            }
        }
        let mut state = rt.take().unwrap_or_default();
        let c = ctx.clone();
        let p = pod.clone();
        let r = last_refs.clone();
        let synced = tokio::task::spawn_blocking(move || {
            let status = state.sync(&c, &p, &r);
            (state, status)
        })
        .await;
        let mut status = match synced {
            Ok((state, status)) => {
                rt = Some(state);
                status
            }
            Err(e) => {
                tracing::error!(pod = %name, error = %e, "pod sync panicked");
                rt = Some(PodRuntime::default());
                tokio::time::sleep(RESYNC).await;
                continue;
            }
        };
        keep_transition_times(&mut status, last_status.as_ref());
        if last_status.as_ref() != Some(&status) {
            let patch = serde_json::json!({"status": status});
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => last_status = Some(status),
                Err(e) => tracing::warn!(pod = %name, error = %e, "posting pod status"),
            }
        }
        last_pod = Some(pod);
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    // The manager dropped the pod.
                    if let Some(p) = &last_pod {
                        stop(&ctx, p, grace_of(p)).await;
                    }
                    return;
                }
            }
            _ = tokio::time::sleep(RESYNC) => {}
        }
    }
}

/// Tears the pod down (preStop, stop signal, SIGKILL after `grace`, sandbox and volumes) on
/// the blocking pool.
async fn stop(ctx: &SyncContext, pod: &Arc<Pod>, grace: Duration) {
    let (c, p) = (ctx.clone(), pod.clone());
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let _ = tokio::task::spawn_blocking(move || worker::teardown(&c, &uid, Some(&p), grace)).await;
}

/// Stops an evicted pod at once and reports it Failed/Evicted.
async fn evict(api: &Api<Pod>, ctx: &SyncContext, pod: &Arc<Pod>, last: Option<&Value>) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    stop(ctx, pod, Duration::from_secs(2)).await;
    let mut status = last.cloned().unwrap_or_else(|| serde_json::json!({}));
    status["phase"] = "Failed".into();
    status["reason"] = "Evicted".into();
    status["message"] = "The node was low on resource: memory.".into();
    if let Some(conds) = status["conditions"].as_array_mut() {
        for c in conds
            .iter_mut()
            .filter(|c| c["type"] == "Ready" || c["type"] == "ContainersReady")
        {
            c["status"] = "False".into();
        }
    }
    if let Some(cs) = status["containerStatuses"].as_array_mut() {
        for c in cs {
            c["ready"] = false.into();
            c["started"] = false.into();
            c["state"] = serde_json::json!({"terminated": {"exitCode": 137, "reason": "Evicted"}});
        }
    }
    let patch = serde_json::json!({"status": status});
    if let Err(e) = api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        tracing::warn!(pod = %name, error = %e, "reporting the eviction");
    }
}

/// Tears down sandboxes of pods the API does not have.
fn remove_orphans(ctx: &SyncContext, known: &HashSet<String>) {
    let Ok(pods) = ctx.engine.list_pods() else {
        return;
    };
    for p in pods {
        let Some(uid) = p.labels.get("io.kubernetes.pod.uid") else {
            continue;
        };
        if p.name == naming::sandbox(uid) && !known.contains(uid) {
            tracing::info!(pod = %uid, "tearing down a pod deleted while the agent was away");
            worker::teardown(ctx, uid, None, Duration::from_secs(2));
        }
    }
}

/// Watches this node's pods and runs a worker for each until the task is dropped.
pub async fn run(client: kube::Client, ctx: SyncContext, node: String) {
    let api: Api<Pod> = Api::all(client.clone());
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut stream = watcher(api, cfg).boxed();
    let mut workers: HashMap<String, watch::Sender<Option<Arc<Pod>>>> = HashMap::new();
    let mut listing: Option<HashSet<String>> = None;
    while let Some(ev) = stream.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!(error = %e, "watching pods");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        match ev {
            watcher::Event::Init => listing = Some(HashSet::new()),
            watcher::Event::InitApply(p) | watcher::Event::Apply(p) => {
                let Some(uid) = p.metadata.uid.clone() else {
                    continue;
                };
                if let Some(l) = listing.as_mut() {
                    l.insert(uid.clone());
                }
                let p = Arc::new(p);
                match workers.get(&uid) {
                    Some(tx) if !tx.is_closed() => {
                        let _ = tx.send(Some(p));
                    }
                    _ => {
                        let (tx, rx) = watch::channel(Some(p));
                        tokio::spawn(worker(client.clone(), ctx.clone(), rx));
                        workers.insert(uid, tx);
                    }
                }
            }
            watcher::Event::Delete(p) => {
                if let Some(tx) = p.metadata.uid.as_ref().and_then(|u| workers.remove(u)) {
                    let _ = tx.send(None);
                    // The worker tears down once it sees None; keep the sender alive until then.
                    tokio::spawn(async move { tx.closed().await });
                }
            }
            watcher::Event::InitDone => {
                let seen = listing.take().unwrap_or_default();
                let gone: Vec<String> = workers
                    .keys()
                    .filter(|u| !seen.contains(*u))
                    .cloned()
                    .collect();
                for uid in gone {
                    if let Some(tx) = workers.remove(&uid) {
                        let _ = tx.send(None);
                        tokio::spawn(async move { tx.closed().await });
                    }
                }
                let c = ctx.clone();
                let _ = tokio::task::spawn_blocking(move || remove_orphans(&c, &seen)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_conditions_keep_their_transition_time() {
        let old = serde_json::json!({"conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "t1"},
            {"type": "Initialized", "status": "False", "lastTransitionTime": "t1"}]});
        let mut new = serde_json::json!({"conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "t2"},
            {"type": "Initialized", "status": "True", "lastTransitionTime": "t2"}]});
        keep_transition_times(&mut new, Some(&old));
        assert_eq!(new["conditions"][0]["lastTransitionTime"], "t1");
        assert_eq!(new["conditions"][1]["lastTransitionTime"], "t2");
    }
}
