//! Cross-node pod routing, as a library the node agent calls with the cluster's node list:
//!
//! - **host-gw** (flannel's backend of that name): a route to every other node's pod CIDR via
//!   that node's underlay address. Needs the nodes on one L2 segment.
//! - **VXLAN**: a VXLAN device whose address is the first address of this node's pod CIDR
//!   (the "VTEP" address), and per peer node a route to its pod CIDR via its VTEP address
//!   (`onlink`), a permanent neighbour entry for that address and a forwarding-database entry
//!   that sends the peer's VTEP MAC to its underlay address. VTEP MACs are derived from the
//!   underlay address, so nodes need to exchange nothing but their address and pod CIDR.
//!
//! Every route podlet adds carries [`ROUTE_PROTOCOL`], so a sync removes exactly the podlet
//! routes that no longer name a peer and never touches anyone else's.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use netlink_packet_route::neighbour::{NeighbourAttribute, NeighbourFlag};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlag, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::{Handle, IpVersion};

use crate::error::CniError;
use crate::ipam::Subnet;
use crate::link::{fail, link_by_name, with_handle};

/// The routing protocol number podlet's routes carry (`ip route … proto 157`).
pub const ROUTE_PROTOCOL: u8 = 157;

/// Another node: where its pods live and how to reach it on the underlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerNode {
    /// The node's pod CIDR.
    pub pod_cidr: Subnet,
    /// The node's underlay address.
    pub node_ip: Ipv4Addr,
}

/// This node's VXLAN overlay settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanConfig {
    /// Device name (e.g. `podlet.vxlan`).
    pub device: String,
    /// VXLAN network identifier.
    pub vni: u32,
    /// UDP port (4789 is IANA's).
    pub port: u16,
    /// This node's underlay address (the tunnel source).
    pub local_ip: Ipv4Addr,
    /// This node's pod CIDR; its network address becomes the VTEP address.
    pub local_pod_cidr: Subnet,
    /// MTU for the device (underlay MTU − 50), or the kernel's choice.
    pub mtu: Option<u32>,
}

/// The VTEP MAC of the node at `node_ip`: locally administered, unicast, unique per address.
pub fn vtep_mac(node_ip: Ipv4Addr) -> [u8; 6] {
    let o = node_ip.octets();
    [0x0e, 0x9d, o[0], o[1], o[2], o[3]]
}

/// A podlet route to a peer (the Service range's `local` route is not one).
fn is_ours(r: &RouteMessage) -> bool {
    r.header.protocol == RouteProtocol::Other(ROUTE_PROTOCOL) && r.header.kind == RouteType::Unicast
}

fn destination(r: &RouteMessage) -> Option<Subnet> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(Subnet {
            network: *ip,
            prefix: r.header.destination_prefix_length,
        }),
        _ => None,
    })
}

async fn our_routes(h: &Handle) -> Result<Vec<RouteMessage>, CniError> {
    let mut out = Vec::new();
    let mut routes = h.route().get(IpVersion::V4).execute();
    while let Some(r) = routes
        .try_next()
        .await
        .map_err(|e| fail("list routes", e))?
    {
        if is_ours(&r) {
            out.push(r);
        }
    }
    Ok(out)
}

async fn delete_stale(h: &Handle, keep: &[Subnet]) -> Result<Vec<Subnet>, CniError> {
    let mut removed = Vec::new();
    for r in our_routes(h).await? {
        match destination(&r) {
            Some(d) if keep.contains(&d) => {}
            d => {
                h.route()
                    .del(r)
                    .execute()
                    .await
                    .map_err(|e| fail("delete route", e))?;
                removed.extend(d);
            }
        }
    }
    Ok(removed)
}

/// host-gw: makes this namespace route each peer's pod CIDR via the peer's underlay address,
/// and removes podlet routes for peers no longer listed.
pub fn sync_host_gw(peers: &[PeerNode]) -> Result<(), CniError> {
    let peers = peers.to_vec();
    with_handle(move |h| {
        Box::pin(async move {
            let keep: Vec<Subnet> = peers.iter().map(|p| p.pod_cidr).collect();
            delete_stale(&h, &keep).await?;
            for p in &peers {
                h.route()
                    .add()
                    .v4()
                    .replace()
                    .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
                    .destination_prefix(p.pod_cidr.network, p.pod_cidr.prefix)
                    .gateway(p.node_ip)
                    .execute()
                    .await
                    .map_err(|e| fail(&format!("route to {}", p.node_ip), e))?;
            }
            Ok(())
        })
    })
}

/// Creates (or adopts) this node's VXLAN device with its VTEP MAC and address, and sets it up.
pub fn ensure_vxlan(cfg: &VxlanConfig) -> Result<(), CniError> {
    let cfg = cfg.clone();
    with_handle(move |h| {
        Box::pin(async move {
            let dev = match link_by_name(&h, &cfg.device).await? {
                Some(l) => l,
                None => {
                    h.link()
                        .add()
                        .vxlan(cfg.device.clone(), cfg.vni)
                        .local(cfg.local_ip)
                        .port(cfg.port)
                        .learning(false)
                        .execute()
                        .await
                        .map_err(|e| fail("add vxlan device", e))?;
                    link_by_name(&h, &cfg.device)
                        .await?
                        .ok_or_else(|| fail("vxlan device", "vanished"))?
                }
            };
            let idx = dev.header.index;
            let mut set = h.link().set(idx).address(vtep_mac(cfg.local_ip).to_vec());
            if let Some(m) = cfg.mtu {
                set = set.mtu(m);
            }
            set.execute().await.map_err(|e| fail("vxlan settings", e))?;
            h.link()
                .set(idx)
                .up()
                .execute()
                .await
                .map_err(|e| fail("vxlan up", e))?;
            let r = h
                .address()
                .add(idx, IpAddr::V4(cfg.local_pod_cidr.network), 32)
                .execute()
                .await;
            match r {
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(()),
                r => r.map_err(|e| fail("vxlan address", e)),
            }
        })
    })
}

/// Points the overlay at `peers`: per peer a route, a neighbour and an FDB entry; podlet routes
/// (and their neighbour entries) for peers no longer listed are removed. Call
/// [`ensure_vxlan`] first.
pub fn sync_vxlan_peers(cfg: &VxlanConfig, peers: &[PeerNode]) -> Result<(), CniError> {
    let cfg = cfg.clone();
    let peers = peers.to_vec();
    with_handle(move |h| {
        Box::pin(async move {
            let dev = link_by_name(&h, &cfg.device)
                .await?
                .ok_or_else(|| fail("vxlan device", format!("{} does not exist", cfg.device)))?;
            let idx = dev.header.index;
            let keep: Vec<Subnet> = peers.iter().map(|p| p.pod_cidr).collect();
            for gone in delete_stale(&h, &keep).await? {
                // The neighbour entry of a removed peer's VTEP address.
                let mut neigh = h.neighbours().get().execute();
                while let Some(n) = neigh.try_next().await.map_err(|e| fail("neighbours", e))? {
                    let hit = n.header.ifindex == idx
                        && n.attributes.iter().any(|a| {
                            matches!(a, NeighbourAttribute::Destination(
                                netlink_packet_route::neighbour::NeighbourAddress::Inet(ip))
                                if *ip == gone.network)
                        });
                    if hit {
                        let _ = h.neighbours().del(n).execute().await;
                    }
                }
            }
            for p in &peers {
                let mac = vtep_mac(p.node_ip);
                let vtep = p.pod_cidr.network;
                h.neighbours()
                    .add_bridge(idx, &mac)
                    .flags(vec![NeighbourFlag::Own])
                    .destination(IpAddr::V4(p.node_ip))
                    .replace()
                    .execute()
                    .await
                    .map_err(|e| fail(&format!("fdb entry for {}", p.node_ip), e))?;
                h.neighbours()
                    .add(idx, IpAddr::V4(vtep))
                    .link_local_address(&mac)
                    .replace()
                    .execute()
                    .await
                    .map_err(|e| fail(&format!("neighbour {vtep}"), e))?;
                let mut req = h
                    .route()
                    .add()
                    .v4()
                    .replace()
                    .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
                    .destination_prefix(p.pod_cidr.network, p.pod_cidr.prefix)
                    .gateway(vtep)
                    .output_interface(idx);
                req.message_mut().header.flags.push(RouteFlag::Onlink);
                req.execute()
                    .await
                    .map_err(|e| fail(&format!("route to {}", p.pod_cidr.network), e))?;
            }
            Ok(())
        })
    })
}

/// Makes every address of `range` local to this namespace (`ip route replace local RANGE dev lo
/// table local`): packets to a Service address are delivered to this host's sockets (where the
/// Service proxy's `sk_lookup` program picks them up) instead of being routed on.
pub fn ensure_local_range(range: Subnet) -> Result<(), CniError> {
    with_handle(move |h| {
        Box::pin(async move {
            let lo = link_by_name(&h, "lo")
                .await?
                .ok_or_else(|| fail("local route", "no loopback device"))?;
            h.route()
                .add()
                .v4()
                .replace()
                .kind(RouteType::Local)
                .scope(RouteScope::Host)
                .table_id(255)
                .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
                .output_interface(lo.header.index)
                .destination_prefix(range.network, range.prefix)
                .execute()
                .await
                .map_err(|e| {
                    fail(
                        &format!("local route for {}/{}", range.network, range.prefix),
                        e,
                    )
                })
        })
    })
}

/// Removes the VXLAN device (its routes, neighbours and FDB entries go with it).
pub fn remove_vxlan(device: &str) -> Result<(), CniError> {
    let device = device.to_string();
    with_handle(move |h| {
        Box::pin(async move {
            if let Some(l) = link_by_name(&h, &device).await? {
                h.link()
                    .del(l.header.index)
                    .execute()
                    .await
                    .map_err(|e| fail("delete vxlan device", e))?;
            }
            Ok(())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vtep_macs_are_unicast_local_and_distinct() {
        let a = vtep_mac(Ipv4Addr::new(10, 213, 0, 1));
        let b = vtep_mac(Ipv4Addr::new(10, 213, 0, 2));
        assert_ne!(a, b);
        assert_eq!(a[0] & 1, 0, "unicast");
        assert_eq!(a[0] & 2, 2, "locally administered");
    }
}
