//! Links, addresses and routes through netlink (`rtnetlink`): the bridge, the veth pair, and
//! the container side configured from inside the container's network namespace (a thread that
//! has `setns`'d there opens its own netlink socket, which then belongs to that namespace).

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use futures::TryStreamExt;
use netlink_packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkInfo, LinkMessage};
use netlink_packet_route::route::RouteProtocol;
use rtnetlink::Handle;

use crate::error::{CniError, ErrorCode};
use crate::ipam::{Allocation, Subnet};

pub(crate) fn fail(what: &str, e: impl std::fmt::Display) -> CniError {
    CniError::new(
        ErrorCode::IoFailure,
        format!("netlink: {what}"),
        e.to_string(),
    )
}

/// Runs `f` with a netlink handle in the current thread's network namespace.
pub(crate) fn with_handle<T>(
    f: impl FnOnce(Handle) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, CniError>>>>,
) -> Result<T, CniError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| fail("runtime", e))?;
    rt.block_on(async move {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| fail("socket", e))?;
        tokio::spawn(conn);
        f(handle).await
    })
}

/// Runs `f` on a thread inside the network namespace at `netns`.
fn in_netns<T: Send + 'static>(
    netns: &Path,
    f: impl FnOnce() -> Result<T, CniError> + Send + 'static,
) -> Result<T, CniError> {
    let ns = std::fs::File::open(netns).map_err(|e| {
        CniError::new(
            ErrorCode::UnknownContainer,
            "cannot open the container's network namespace",
            format!("{}: {e}", netns.display()),
        )
    })?;
    std::thread::spawn(move || {
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| fail("enter network namespace", e))?;
        f()
    })
    .join()
    .map_err(|_| fail("namespace thread", "panicked"))?
}

pub(crate) async fn link_by_name(h: &Handle, name: &str) -> Result<Option<LinkMessage>, CniError> {
    let mut links = h.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(l) => Ok(l),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(fail(&format!("get {name}"), e)),
    }
}

/// Every link of the current namespace, from one dump: unlike a single-link get, a dump does
/// not make the kernel flush the link's pending carrier event (an RCU sync under the RTNL
/// lock) — the right way to look up a link just made.
async fn links_dumped(h: &Handle) -> Result<Vec<LinkMessage>, CniError> {
    let mut links = h.link().get().execute();
    let mut out = Vec::new();
    while let Some(l) = links.try_next().await.map_err(|e| fail("links", e))? {
        out.push(l);
    }
    Ok(out)
}

fn name_of(l: &LinkMessage) -> Option<&str> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

fn is_up(l: &LinkMessage) -> bool {
    l.header
        .flags
        .contains(&netlink_packet_route::link::LinkFlag::Up)
}

fn mtu_of(l: &LinkMessage) -> Option<u32> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(m) => Some(*m),
        _ => None,
    })
}

/// A random locally administered unicast MAC, as the kernel would pick.
fn random_mac() -> Result<[u8; 6], CniError> {
    let mut b = [0u8; 6];
    let mut f = std::fs::File::open("/dev/urandom").map_err(|e| fail("random MAC", e))?;
    std::io::Read::read_exact(&mut f, &mut b).map_err(|e| fail("random MAC", e))?;
    b[0] = (b[0] & 0xfe) | 0x02;
    Ok(b)
}

fn mac_text(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn mac_of(l: &LinkMessage) -> String {
    l.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Address(b) => Some(
                b.iter()
                    .map(|x| format!("{x:02x}"))
                    .collect::<Vec<_>>()
                    .join(":"),
            ),
            _ => None,
        })
        .unwrap_or_default()
}

/// What ADD configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    /// The bridge's MAC.
    pub bridge_mac: String,
    /// The host-side veth's MAC.
    pub host_mac: String,
    /// The container interface's MAC.
    pub container_mac: String,
}

/// The bridge and veth settings of one ADD.
#[derive(Debug, Clone)]
pub struct BridgeAttach {
    /// Bridge name.
    pub bridge: String,
    /// Host-side veth name.
    pub host_veth: String,
    /// Interface name in the container.
    pub ifname: String,
    /// MTU for bridge and veths (None: kernel default).
    pub mtu: Option<u32>,
    /// Give the bridge the gateway address.
    pub is_gateway: bool,
    /// Add a default route in the container via the gateway.
    pub default_route: bool,
    /// Extra routes (from IPAM).
    pub routes: Vec<(Subnet, Option<Ipv4Addr>)>,
    /// Let traffic leave and re-enter the bridge through the same port (`hairpinMode`).
    pub hairpin: bool,
    /// The container interface's MAC address (from `runtimeConfig.mac` or `CNI_ARGS`).
    pub mac: Option<[u8; 6]>,
}

/// Parses `aa:bb:cc:dd:ee:ff` into bytes; a unicast address only.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in out.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    (parts.next().is_none() && out[0] & 1 == 0 && out != [0; 6]).then_some(out)
}

/// Sets a bridge-port option of `index` (RTM_NEWLINK with slave data, as `ip link set … type
/// bridge_slave` does; RTM_SETLINK ignores it).
async fn set_bridge_port(
    h: &mut Handle,
    port_name: &str,
    opts: Vec<netlink_packet_route::link::InfoBridgePort>,
) -> Result<(), CniError> {
    use netlink_packet_core::{NetlinkMessage, NLM_F_ACK, NLM_F_REQUEST};
    use netlink_packet_route::link::{InfoPortData, InfoPortKind, LinkInfo};
    use netlink_packet_route::RouteNetlinkMessage;
    let mut msg = LinkMessage::default();
    // Found by name (index 0): looking the new link up would flush its carrier event first.
    msg.attributes
        .push(LinkAttribute::IfName(port_name.to_string()));
    msg.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::PortKind(InfoPortKind::Bridge),
        LinkInfo::PortData(InfoPortData::BridgePort(opts)),
    ]));
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewLink(msg));
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    let mut resp = Box::pin(h.request(req).map_err(|e| fail("bridge port", e))?);
    while let Some(m) = futures::StreamExt::next(&mut resp).await {
        if let netlink_packet_core::NetlinkPayload::Error(e) = m.payload {
            if e.code.is_some() {
                return Err(fail("bridge port", e));
            }
        }
    }
    Ok(())
}

/// Creates/adopts the bridge, a veth pair into `netns`, and configures the container side.
pub fn attach(netns: &Path, a: &BridgeAttach, alloc: Allocation) -> Result<Attached, CniError> {
    let ns_fd = std::fs::File::open(netns).map_err(|e| {
        CniError::new(
            ErrorCode::UnknownContainer,
            "cannot open the container's network namespace",
            format!("{}: {e}", netns.display()),
        )
    })?;
    let cfg = a.clone();
    let (bridge_mac, host_mac) = with_handle(move |h| {
        Box::pin(async move {
            let br = match link_by_name(&h, &cfg.bridge).await? {
                Some(l) => l,
                None => {
                    h.link()
                        .add()
                        .bridge(cfg.bridge.clone())
                        .execute()
                        .await
                        .map_err(|e| fail("add bridge", e))?;
                    link_by_name(&h, &cfg.bridge)
                        .await?
                        .ok_or_else(|| fail("bridge", "vanished"))?
                }
            };
            let br_idx = br.header.index;
            // Every RTNL operation waits for every other pod's: touch the bridge only when it
            // is not as wanted.
            if !is_up(&br) || cfg.mtu.is_some_and(|m| mtu_of(&br) != Some(m)) {
                let mut set = h.link().set(br_idx).up();
                if let Some(m) = cfg.mtu {
                    set = set.mtu(m);
                }
                set.execute().await.map_err(|e| fail("bridge up", e))?;
            }
            if cfg.is_gateway {
                let r = h
                    .address()
                    .add(br_idx, IpAddr::V4(alloc.gateway), alloc.prefix)
                    .execute()
                    .await;
                if let Err(rtnetlink::Error::NetlinkError(e)) = &r {
                    if e.raw_code() != -libc::EEXIST {
                        return Err(fail("bridge address", r.unwrap_err()));
                    }
                } else {
                    r.map_err(|e| fail("bridge address", e))?;
                }
            }
            if let Some(old) = link_by_name(&h, &cfg.host_veth).await? {
                h.link()
                    .del(old.header.index)
                    .execute()
                    .await
                    .map_err(|e| fail("remove stale veth", e))?;
            }
            // One RTM_NEWLINK makes the pair with the container end born inside the pod's
            // namespace under its final name, MTU and MAC: moving a link between namespaces
            // afterwards costs the kernel a network-wide RCU sync, most of an ADD.
            // (rtnetlink's `veth(a, b)` puts `a` in the peer message and `b` in the main one.)
            let mut req = h
                .link()
                .add()
                .veth(cfg.ifname.clone(), cfg.host_veth.clone());
            let msg = req.message_mut();
            if let Some(m) = cfg.mtu {
                msg.attributes.push(LinkAttribute::Mtu(m));
            }
            msg.attributes.push(LinkAttribute::Controller(br_idx));
            // The host end's MAC chosen here, so nothing has to read the new link back.
            let host_mac = random_mac()?;
            msg.attributes
                .push(LinkAttribute::Address(host_mac.to_vec()));
            // One queue each, asked for up front: left to the kernel, a veth is born with a
            // queue per CPU and then cut to one, an RCU sync taken under the RTNL lock that
            // every other pod's ADD is waiting for.
            msg.attributes.push(LinkAttribute::NumTxQueues(1));
            msg.attributes.push(LinkAttribute::NumRxQueues(1));
            for attr in msg.attributes.iter_mut() {
                let LinkAttribute::LinkInfo(infos) = attr else {
                    continue;
                };
                for info in infos.iter_mut() {
                    if let LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))) = info {
                        peer.attributes
                            .push(LinkAttribute::NetNsFd(ns_fd.as_raw_fd()));
                        peer.attributes.push(LinkAttribute::NumTxQueues(1));
                        peer.attributes.push(LinkAttribute::NumRxQueues(1));
                        if let Some(m) = cfg.mtu {
                            peer.attributes.push(LinkAttribute::Mtu(m));
                        }
                        if let Some(mac) = cfg.mac {
                            peer.attributes.push(LinkAttribute::Address(mac.to_vec()));
                        }
                    }
                }
            }
            req.execute().await.map_err(|e| fail("add veth", e))?;
            if cfg.hairpin {
                let mut h = h.clone();
                set_bridge_port(
                    &mut h,
                    &cfg.host_veth,
                    vec![netlink_packet_route::link::InfoBridgePort::HairpinMode(
                        true,
                    )],
                )
                .await?;
            }
            if std::fs::read("/proc/sys/net/ipv4/ip_forward")
                .ok()
                .as_deref()
                != Some(b"1\n")
            {
                let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", "1");
            }
            Ok((mac_of(&br), mac_text(&host_mac)))
        })
    })?;
    let cfg = a.clone();
    let container_mac = in_netns(netns, move || {
        with_handle(move |h| {
            Box::pin(async move {
                let links = links_dumped(&h).await?;
                let l = links
                    .iter()
                    .find(|l| name_of(l) == Some(cfg.ifname.as_str()))
                    .cloned()
                    .ok_or_else(|| fail("container veth", "not in the namespace"))?;
                let idx = l.header.index;
                h.link()
                    .set(idx)
                    .up()
                    .execute()
                    .await
                    .map_err(|e| fail("container interface", e))?;
                if let Some(lo) = links.iter().find(|l| name_of(l) == Some("lo") && !is_up(l)) {
                    h.link()
                        .set(lo.header.index)
                        .up()
                        .execute()
                        .await
                        .map_err(|e| fail("loopback up", e))?;
                }
                h.address()
                    .add(idx, IpAddr::V4(alloc.ip), alloc.prefix)
                    .execute()
                    .await
                    .map_err(|e| fail("container address", e))?;
                if cfg.default_route {
                    h.route()
                        .add()
                        .v4()
                        .protocol(RouteProtocol::Boot)
                        .gateway(alloc.gateway)
                        .execute()
                        .await
                        .map_err(|e| fail("default route", e))?;
                }
                for (dst, gw) in &cfg.routes {
                    if dst.prefix == 0 && cfg.default_route {
                        continue;
                    }
                    h.route()
                        .add()
                        .v4()
                        .protocol(RouteProtocol::Boot)
                        .destination_prefix(dst.network, dst.prefix)
                        .gateway(gw.unwrap_or(alloc.gateway))
                        .execute()
                        .await
                        .map_err(|e| fail("route", e))?;
                }
                Ok(mac_of(&l))
            })
        })
    })?;
    Ok(Attached {
        bridge_mac,
        host_mac,
        container_mac,
    })
}

/// Names of detached veths waiting for the reaper: `pdel` + the ifindex in hex.
pub const TOMBSTONE_PREFIX: &str = "pdel";

/// Takes a link out of service at once: down, IPv4 addresses removed, renamed to a tombstone
/// so its name is free again. Returns the tombstone name.
async fn retire(h: &Handle, l: &LinkMessage) -> Result<String, CniError> {
    let idx = l.header.index;
    h.link()
        .set(idx)
        .down()
        .execute()
        .await
        .map_err(|e| fail("interface down", e))?;
    let mut addrs = h.address().get().set_link_index_filter(idx).execute();
    let mut found = Vec::new();
    while let Some(a) = addrs.try_next().await.map_err(|e| fail("addresses", e))? {
        found.push(a);
    }
    for a in found {
        h.address()
            .del(a)
            .execute()
            .await
            .map_err(|e| fail("remove address", e))?;
    }
    let name = format!("{TOMBSTONE_PREFIX}{idx:x}");
    h.link()
        .set(idx)
        .name(name.clone())
        .execute()
        .await
        .map_err(|e| fail("rename interface", e))?;
    Ok(name)
}

/// DEL: the container interface and the host end are retired at once (down, no address,
/// renamed, so a new ADD can reuse both names); destroying the pair — which costs the kernel
/// an RCU barrier of ~20 ms — is left to [`destroy_tombstone`], which the plugin runs in a
/// detached process. Returns the host end's tombstone, if there was a host end.
/// A missing namespace or interface is not an error: DEL is idempotent.
pub fn detach(
    netns: Option<&Path>,
    ifname: &str,
    host_veth: &str,
) -> Result<Option<String>, CniError> {
    if let Some(netns) = netns.filter(|p| p.exists()) {
        let ifname = ifname.to_string();
        in_netns(netns, move || {
            with_handle(move |h| {
                Box::pin(async move {
                    if let Some(l) = link_by_name(&h, &ifname).await? {
                        retire(&h, &l).await?;
                    }
                    Ok(())
                })
            })
        })?;
    }
    let host_veth = host_veth.to_string();
    with_handle(move |h| {
        Box::pin(async move {
            match link_by_name(&h, &host_veth).await? {
                Some(l) => retire(&h, &l).await.map(Some),
                None => Ok(None),
            }
        })
    })
}

/// Deletes the tombstone `name` (and so its veth pair) in this namespace, if it still exists.
pub fn destroy_tombstone(name: &str) -> Result<(), CniError> {
    if !name.starts_with(TOMBSTONE_PREFIX) {
        return Err(fail("destroy", format!("{name} is not a tombstone")));
    }
    let name = name.to_string();
    with_handle(move |h| {
        Box::pin(async move {
            if let Some(l) = link_by_name(&h, &name).await? {
                match h.link().del(l.header.index).execute().await {
                    Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => {}
                    r => r.map_err(|e| fail("delete interface", e))?,
                }
            }
            Ok(())
        })
    })
}

/// Deletes every tombstone in this namespace (GC: reapers that never ran).
pub fn destroy_all_tombstones() -> Result<(), CniError> {
    let names = with_handle(|h| {
        Box::pin(async move {
            let mut links = h.link().get().execute();
            let mut names = Vec::new();
            while let Some(l) = links.try_next().await.map_err(|e| fail("links", e))? {
                for a in &l.attributes {
                    if let LinkAttribute::IfName(n) = a {
                        if n.starts_with(TOMBSTONE_PREFIX) {
                            names.push(n.clone());
                        }
                    }
                }
            }
            Ok(names)
        })
    })?;
    for n in names {
        destroy_tombstone(&n)?;
    }
    Ok(())
}

/// Removes the container interface at once (a failed ADD cleaning up after itself).
pub fn remove_now(netns: &Path, ifname: &str) -> Result<(), CniError> {
    if !netns.exists() {
        return Ok(());
    }
    let ifname = ifname.to_string();
    in_netns(netns, move || {
        with_handle(move |h| {
            Box::pin(async move {
                if let Some(l) = link_by_name(&h, &ifname).await? {
                    h.link()
                        .del(l.header.index)
                        .execute()
                        .await
                        .map_err(|e| fail("delete interface", e))?;
                }
                Ok(())
            })
        })
    })
}

/// CHECK: the interface exists in the container, carries `ip`, and has `mac` when given
/// (the MAC the previous result reported).
pub fn check(
    netns: &Path,
    ifname: &str,
    ip: Ipv4Addr,
    mac: Option<String>,
) -> Result<(), CniError> {
    let ifname = ifname.to_string();
    in_netns(netns, move || {
        with_handle(move |h| {
            Box::pin(async move {
                let l = link_by_name(&h, &ifname).await?.ok_or_else(|| {
                    CniError::new(
                        ErrorCode::IoFailure,
                        "check failed",
                        format!("interface {ifname} is missing"),
                    )
                })?;
                if let Some(want) = &mac {
                    let got = mac_of(&l);
                    if !got.eq_ignore_ascii_case(want) {
                        return Err(CniError::new(
                            ErrorCode::IoFailure,
                            "check failed",
                            format!("interface {ifname} has MAC {got}, the result says {want}"),
                        ));
                    }
                }
                let mut addrs = h
                    .address()
                    .get()
                    .set_link_index_filter(l.header.index)
                    .execute();
                while let Some(a) = addrs.try_next().await.map_err(|e| fail("addresses", e))? {
                    for attr in &a.attributes {
                        if let netlink_packet_route::address::AddressAttribute::Address(
                            IpAddr::V4(got),
                        ) = attr
                        {
                            if *got == ip {
                                return Ok(());
                            }
                        }
                    }
                }
                Err(CniError::new(
                    ErrorCode::IoFailure,
                    "check failed",
                    format!("interface {ifname} does not carry {ip}"),
                ))
            })
        })
    })
}
