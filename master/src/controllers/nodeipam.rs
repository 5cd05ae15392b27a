//! Node IPAM: every Node without `spec.podCIDR` gets the lowest free /24 of the cluster CIDR
//! (default `10.42.0.0/16`, k3s's), which its agent uses for its pods' addresses and the other
//! agents route to. A podCIDR, once set, never changes (as in Kubernetes).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::json;

use super::{level_loop, res, triggers, Ctx, Informer};

/// The default cluster CIDR pods are addressed from.
pub const DEFAULT_CLUSTER_CIDR: &str = "10.42.0.0/16";

/// Parses `A.B.C.D/N` (N ≤ 24) into its network address and prefix length.
pub fn parse_cidr(cidr: &str) -> Option<(Ipv4Addr, u8)> {
    let (ip, len) = cidr.split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    if len > 24 {
        return None;
    }
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Some((Ipv4Addr::from(u32::from(ip) & mask), len))
}

/// The lowest /24 of `cluster` not in `used`, if any is left.
pub fn next_free(cluster: (Ipv4Addr, u8), used: &BTreeSet<String>) -> Option<String> {
    let (net, len) = cluster;
    let count = 1u32 << (24 - len);
    (0..count)
        .map(|i| format!("{}/24", Ipv4Addr::from(u32::from(net) + (i << 8))))
        .find(|c| !used.contains(c))
}

/// Assignments made but not yet seen in the informer (node → CIDR): without them a pass that
/// starts before the informer catches up hands one CIDR to two nodes.
type Pending = std::sync::Mutex<std::collections::BTreeMap<String, String>>;

async fn pass(ctx: &Ctx, nodes: &Informer, cluster: (Ipv4Addr, u8), pending: &Pending) {
    let all = nodes.list();
    let mut used: BTreeSet<String> = all
        .iter()
        .filter_map(|n| n["spec"]["podCIDR"].as_str().map(String::from))
        .collect();
    {
        let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
        p.retain(|node, _| {
            all.iter().any(|n| {
                n["metadata"]["name"].as_str() == Some(node.as_str())
                    && n["spec"]["podCIDR"].is_null()
            })
        });
        used.extend(p.values().cloned());
    }
    let mut unassigned: Vec<&std::sync::Arc<serde_json::Value>> = all
        .iter()
        .filter(|n| n["spec"]["podCIDR"].is_null())
        .filter(|n| {
            let name = n["metadata"]["name"].as_str().unwrap_or("");
            !pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(name)
        })
        .collect();
    // Oldest first, so that CIDRs follow the order nodes joined in.
    unassigned.sort_by_key(|n| {
        n["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap_or("")
            .to_string()
    });
    for n in unassigned {
        let name = n["metadata"]["name"].as_str().unwrap_or("");
        let Some(cidr) = next_free(cluster, &used) else {
            tracing::warn!(node = %name, "no pod CIDR left in the cluster CIDR");
            return;
        };
        let patch = json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
        match ctx.patch(res("Node"), None, name, None, &patch).await {
            Ok(_) => {
                tracing::info!(node = %name, %cidr, "pod CIDR assigned");
                pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name.to_string(), cidr.clone());
                used.insert(cidr);
            }
            Err(e) => tracing::warn!(node = %name, error = %e, "assigning a pod CIDR"),
        }
    }
}

/// Runs the controller over `cluster_cidr`.
pub async fn run(ctx: Ctx, nodes: Informer, cluster_cidr: (Ipv4Addr, u8)) {
    let trigger = triggers(&[&nodes]);
    let pending = Pending::default();
    level_loop(trigger, Duration::from_secs(5), || {
        pass(&ctx, &nodes, cluster_cidr, &pending)
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lowest_free_slash_24_is_chosen() {
        let cluster = parse_cidr("10.42.0.0/16").unwrap();
        let mut used = BTreeSet::new();
        assert_eq!(next_free(cluster, &used).unwrap(), "10.42.0.0/24");
        used.insert("10.42.0.0/24".to_string());
        used.insert("10.42.2.0/24".to_string());
        assert_eq!(next_free(cluster, &used).unwrap(), "10.42.1.0/24");
        let tiny = parse_cidr("10.9.3.7/24").unwrap();
        assert_eq!(tiny.0, Ipv4Addr::new(10, 9, 3, 0));
        used.insert("10.9.3.0/24".to_string());
        assert_eq!(next_free(tiny, &used), None);
        assert!(parse_cidr("10.0.0.0/25").is_none() && parse_cidr("x/8").is_none());
    }
}
