//! The pod network on this node: a CNI configuration for `podlet-cni` on the node's pod CIDR
//! (bridge `podletk8s0`, the first address as the gateway), and routes to every other node's
//! pod CIDR kept in sync from the Node objects — host-gw (through that node's address) or a
//! VXLAN overlay (`podlet.vxlan`, flannel-style VTEPs; pods get MTU 1450).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kube::runtime::watcher;
use podlet_cni::ipam::Subnet;
use podlet_cni::routing::{PeerNode, VxlanConfig};
use podlet_runtime::pod::PodNetwork;
use serde_json::json;

use crate::{AgentConfig, AgentError, RouteBackend};

/// The CNI network name pods of the cluster are attached to.
pub const NETWORK_NAME: &str = "podlet-k8s";
/// The bridge in the node's network namespace.
pub const BRIDGE: &str = "podletk8s0";
/// How often routes to other nodes are re-applied without a change.
pub const ROUTE_SYNC: Duration = Duration::from_secs(30);

/// The VXLAN device of the overlay backend.
pub const VXLAN_DEVICE: &str = "podlet.vxlan";
/// The overlay's VXLAN network identifier and UDP port (flannel's defaults).
pub const VXLAN_VNI: u32 = 1;
/// The overlay's UDP port.
pub const VXLAN_PORT: u16 = 8472;
/// Pod MTU over VXLAN: a 1500-byte underlay less the 50-byte encapsulation.
pub const VXLAN_POD_MTU: u32 = 1450;

/// The VXLAN settings of this node when the backend is VXLAN.
pub fn overlay(cfg: &AgentConfig, pod_cidr: &str) -> Result<Option<VxlanConfig>, AgentError> {
    if cfg.backend != RouteBackend::Vxlan {
        return Ok(None);
    }
    let subnet = Subnet::parse(pod_cidr)
        .ok_or_else(|| AgentError::Invalid(format!("pod CIDR {pod_cidr:?} is not A.B.C.D/N")))?;
    Ok(Some(VxlanConfig {
        device: VXLAN_DEVICE.into(),
        vni: VXLAN_VNI,
        port: VXLAN_PORT,
        local_ip: cfg.node_ip,
        local_pod_cidr: subnet,
        mtu: Some(VXLAN_POD_MTU),
    }))
}

/// The CNI configuration list for `pod_cidr` (pods get `mtu` when given).
pub fn conflist(pod_cidr: &Subnet, data_dir: &Path, mtu: Option<u32>) -> serde_json::Value {
    let gateway = Ipv4Addr::from(u32::from(pod_cidr.network) + 1);
    let mut list = json!({
        "cniVersion": "1.1.0",
        "name": NETWORK_NAME,
        "plugins": [{
            "type": "podlet-cni",
            "bridge": BRIDGE,
            "isGateway": true,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": format!("{}/{}", pod_cidr.network, pod_cidr.prefix),
                             "gateway": gateway.to_string()}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": data_dir.join("cni/networks").display().to_string()
            }
        }]
    });
    if let Some(m) = mtu {
        list["plugins"][0]["mtu"] = json!(m);
    }
    list
}

/// Writes the node's CNI configuration; returns the pod network to attach pods to.
pub fn setup(cfg: &AgentConfig, pod_cidr: &str) -> Result<PodNetwork, AgentError> {
    let subnet = Subnet::parse(pod_cidr)
        .ok_or_else(|| AgentError::Invalid(format!("pod CIDR {pod_cidr:?} is not A.B.C.D/N")))?;
    let conf_dir = cfg.data_dir.join("cni/net.d");
    std::fs::create_dir_all(&conf_dir).map_err(|source| AgentError::Io {
        what: "create",
        path: conf_dir.clone(),
        source,
    })?;
    let path = conf_dir.join(format!("{NETWORK_NAME}.conflist"));
    let mtu = (cfg.backend == RouteBackend::Vxlan).then_some(VXLAN_POD_MTU);
    let data = serde_json::to_vec_pretty(&conflist(&subnet, &cfg.data_dir, mtu))
        .map_err(|e| AgentError::Invalid(e.to_string()))?;
    std::fs::write(&path, data).map_err(|source| AgentError::Io {
        what: "write",
        path: path.clone(),
        source,
    })?;
    let mut plugin_dirs: Vec<PathBuf> = cfg.cni_plugin_dirs.clone();
    if let Some(dir) = cfg.exe.parent() {
        plugin_dirs.push(dir.to_path_buf());
    }
    Ok(PodNetwork::Cni {
        name: NETWORK_NAME.into(),
        conf_dir,
        plugin_dirs,
    })
}

/// Every other node with a pod CIDR and an InternalIP, as a host-gw peer.
pub fn peers(nodes: &[Node], me: &str) -> Vec<PeerNode> {
    nodes
        .iter()
        .filter(|n| n.metadata.name.as_deref() != Some(me))
        .filter_map(|n| {
            let cidr = Subnet::parse(n.spec.as_ref()?.pod_cidr.as_deref()?)?;
            let ip = n
                .status
                .as_ref()?
                .addresses
                .as_ref()?
                .iter()
                .find(|a| a.type_ == "InternalIP")?
                .address
                .parse()
                .ok()?;
            Some(PeerNode {
                pod_cidr: cidr,
                node_ip: ip,
            })
        })
        .collect()
}

/// Keeps routes to the other nodes' pod CIDRs until the task is dropped — host-gw, or the
/// VXLAN overlay when `vxlan` is given (its device made first): synced on every Node change
/// seen by a watch, and re-applied every [`ROUTE_SYNC`] in case a route was removed behind the
/// agent's back.
pub async fn sync_routes(client: kube::Client, me: String, vxlan: Option<VxlanConfig>) {
    if let Some(v) = vxlan.clone() {
        match tokio::task::spawn_blocking(move || podlet_cni::routing::ensure_vxlan(&v)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "creating the VXLAN device"),
            Err(e) => tracing::error!(error = %e, "VXLAN setup task"),
        }
    }
    let api: Api<Node> = Api::all(client);
    let mut stream = watcher(api, watcher::Config::default()).boxed();
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    let mut listing: Option<BTreeMap<String, Node>> = None;
    let mut applied: Option<Vec<PeerNode>> = None;
    let mut tick = tokio::time::interval(ROUTE_SYNC);
    loop {
        let mut force = false;
        tokio::select! {
            ev = stream.next() => match ev {
                Some(Ok(watcher::Event::Init)) => listing = Some(BTreeMap::new()),
                Some(Ok(watcher::Event::InitApply(n))) => {
                    if let Some(l) = listing.as_mut() {
                        l.insert(n.metadata.name.clone().unwrap_or_default(), n);
                    }
                    continue;
                }
                Some(Ok(watcher::Event::InitDone)) => nodes = listing.take().unwrap_or_default(),
                Some(Ok(watcher::Event::Apply(n))) => {
                    nodes.insert(n.metadata.name.clone().unwrap_or_default(), n);
                }
                Some(Ok(watcher::Event::Delete(n))) => {
                    nodes.remove(n.metadata.name.as_deref().unwrap_or(""));
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "watching nodes for routes");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                None => return,
            },
            _ = tick.tick() => force = true,
        }
        let list: Vec<Node> = nodes.values().cloned().collect();
        let want = peers(&list, &me);
        if !force && applied.as_ref() == Some(&want) {
            continue;
        }
        let w = want.clone();
        let v = vxlan.clone();
        let synced = tokio::task::spawn_blocking(move || match &v {
            Some(v) => podlet_cni::routing::sync_vxlan_peers(v, &w),
            None => podlet_cni::routing::sync_host_gw(&w),
        });
        match synced.await {
            Ok(Ok(())) => applied = Some(want),
            Ok(Err(e)) => tracing::warn!(error = %e, "syncing routes to other nodes"),
            Err(e) => tracing::warn!(error = %e, "route sync task"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_is_the_first_address_of_the_pod_cidr() {
        let c = conflist(
            &Subnet::parse("10.42.3.0/24").unwrap(),
            Path::new("/d"),
            None,
        );
        assert!(c["plugins"][0]["mtu"].is_null());
        let v = conflist(
            &Subnet::parse("10.42.3.0/24").unwrap(),
            Path::new("/d"),
            Some(1450),
        );
        assert_eq!(v["plugins"][0]["mtu"], 1450);
        let r = &c["plugins"][0]["ipam"]["ranges"][0][0];
        assert_eq!(r["subnet"], "10.42.3.0/24");
        assert_eq!(r["gateway"], "10.42.3.1");
        assert_eq!(c["plugins"][0]["ipam"]["dataDir"], "/d/cni/networks");
    }

    #[test]
    fn peers_are_other_nodes_with_cidr_and_address() {
        let node = |name: &str, cidr: Option<&str>, ip: &str| -> Node {
            serde_json::from_value(json!({"metadata": {"name": name},
                "spec": {"podCIDR": cidr},
                "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}))
            .unwrap()
        };
        let nodes = vec![
            node("me", Some("10.42.0.0/24"), "10.0.0.1"),
            node("b", Some("10.42.1.0/24"), "10.0.0.2"),
            node("c", None, "10.0.0.3"),
        ];
        let p = peers(&nodes, "me");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].node_ip, Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(p[0].pod_cidr, Subnet::parse("10.42.1.0/24").unwrap());
    }
}
