//! Node-pressure eviction, as kubelet's hard `memory.available` threshold: while the host has
//! less memory available than the threshold, one running pod is chosen every
//! [`EVICTION_INTERVAL`] — lowest QoS class first (BestEffort, Burstable, Guaranteed), the
//! newest within a class — and its worker stops it and reports it `Failed`/`Evicted`, so its
//! controller replaces it (on a node without pressure).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use super::worker::qos_class;
use crate::node::host_facts;
use crate::AgentConfig;

/// How often memory is checked and at most one pod evicted.
pub const EVICTION_INTERVAL: Duration = Duration::from_secs(5);

fn qos_rank(pod: &Pod) -> u8 {
    match qos_class(pod) {
        "BestEffort" => 0,
        "Burstable" => 1,
        _ => 2,
    }
}

/// The pod to evict among `pods` (running, not terminating, not yet chosen).
pub fn pick_victim<'a>(pods: &'a [Pod], chosen: &HashSet<String>) -> Option<&'a Pod> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .filter(|p| !chosen.contains(p.metadata.uid.as_deref().unwrap_or("")))
        .min_by(|a, b| {
            let start = |p: &Pod| {
                p.status
                    .as_ref()
                    .and_then(|s| s.start_time.as_ref())
                    .map(|t| t.0.as_second())
                    .unwrap_or(0)
            };
            qos_rank(a)
                .cmp(&qos_rank(b))
                .then_with(|| start(b).cmp(&start(a)))
        })
}

/// Watches the host's available memory and marks pods for eviction until the task is dropped.
pub async fn run(client: kube::Client, cfg: AgentConfig, evictions: Arc<Mutex<HashSet<String>>>) {
    let pods: Api<Pod> = Api::all(client);
    let lp = ListParams::default().fields(&format!("spec.nodeName={}", cfg.node_name));
    loop {
        tokio::time::sleep(EVICTION_INTERVAL).await;
        let facts = host_facts(&cfg.data_dir);
        if facts.memory_available >= cfg.eviction_memory_available {
            continue;
        }
        let Ok(list) = pods.list(&lp).await else {
            continue;
        };
        let mut chosen = evictions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(victim) = pick_victim(&list.items, &chosen) {
            let uid = victim.metadata.uid.clone().unwrap_or_default();
            tracing::warn!(
                pod = ?victim.metadata.name,
                available = facts.memory_available,
                threshold = cfg.eviction_memory_available,
                "memory pressure: evicting"
            );
            chosen.insert(uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, limits: serde_json::Value, start: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "uid": name},
            "spec": {"containers": [{"name": "c", "resources": {"limits": limits}}]},
            "status": {"phase": "Running", "startTime": start}
        }))
        .unwrap()
    }

    #[test]
    fn lowest_qos_then_newest_goes_first() {
        let guaranteed = pod(
            "gu",
            serde_json::json!({"cpu": "1", "memory": "1Gi"}),
            "2026-01-01T00:00:00Z",
        );
        let old_be = pod("be-old", serde_json::json!({}), "2026-01-01T00:00:00Z");
        let new_be = pod("be-new", serde_json::json!({}), "2026-01-02T00:00:00Z");
        let pods = vec![guaranteed, old_be, new_be];
        let mut chosen = HashSet::new();
        let order: Vec<String> = (0..3)
            .map(|_| {
                let v = pick_victim(&pods, &chosen)
                    .unwrap()
                    .metadata
                    .name
                    .clone()
                    .unwrap();
                chosen.insert(v.clone());
                v
            })
            .collect();
        assert_eq!(order, ["be-new", "be-old", "gu"]);
        assert!(pick_victim(&pods, &chosen).is_none());
    }
}
