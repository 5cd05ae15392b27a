//! Services on this node, in userspace and without any iptables/nftables/IPVS rule:
//!
//! - [`steer`]: a `local` route makes the whole Service range local to the node, and an eBPF
//!   `sk_lookup` program hands every TCP connection to a ClusterIP port or NodePort to the
//!   proxy's one listener.
//! - [`model`]: frontends and their ready backends, built from Services and EndpointSlices
//!   with a Maglev table each, swapped in whole when anything changes.
//! - [`tcp`], [`udp`], [`relay`]: picking a backend and moving the bytes (`splice`).
//! - [`dns`]: the cluster DNS at [`DNS_IP`], answered from the same objects.
//! - [`pod_env`]: what pods see of it: `resolv.conf` by `dnsPolicy`, and the Service
//!   environment variables.

pub mod dns;
pub mod model;
pub mod pod_env;
pub mod relay;
pub mod steer;
pub mod tcp;
pub mod udp;

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use podlet_cni::ipam::Subnet;
use tokio::sync::Notify;

use self::model::{BuildContext, Frontend, FrontendKey, Protocol, ProxyTable};
use crate::AgentError;

/// The Service range (k3s's default `--service-cidr`).
pub const SERVICE_CIDR: &str = "10.43.0.0/16";
/// The cluster DNS address (k3s's default `--cluster-dns`).
pub const DNS_IP: Ipv4Addr = Ipv4Addr::new(10, 43, 0, 10);
/// The cluster domain.
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// Changes arriving this close together are applied in one rebuild.
const DEBOUNCE: Duration = Duration::from_millis(20);

/// Connection counters per Service port (`namespace/name:port`).
#[derive(Debug, Default)]
pub struct Counters {
    by_service: Mutex<HashMap<String, ServiceCounters>>,
}

/// One Service port's counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ServiceCounters {
    /// Connections (UDP flows) relayed to a backend.
    pub opened: u64,
    /// Of those, ended.
    pub closed: u64,
    /// Connections refused because no backend could take them.
    pub failed: u64,
}

impl Counters {
    fn bump(&self, service: &str, f: impl FnOnce(&mut ServiceCounters)) {
        if let Ok(mut m) = self.by_service.lock() {
            f(m.entry(service.to_string()).or_default());
        }
    }
    /// A connection reached a backend.
    pub fn opened(&self, service: &str) {
        self.bump(service, |c| c.opened += 1);
    }
    /// A relayed connection ended.
    pub fn closed(&self, service: &str) {
        self.bump(service, |c| c.closed += 1);
    }
    /// A connection found no backend.
    pub fn failed(&self, service: &str) {
        self.bump(service, |c| c.failed += 1);
    }
    /// A copy of every Service port's counters.
    pub fn snapshot(&self) -> HashMap<String, ServiceCounters> {
        self.by_service
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }
}

/// What the proxy's connection handlers share.
#[derive(Debug, Default)]
pub struct ProxyState {
    /// The frontends, swapped whole.
    pub table: ArcSwap<ProxyTable>,
    affinity: Mutex<HashMap<(FrontendKey, Ipv4Addr), (SocketAddrV4, Instant)>>,
    /// Per Service port counters.
    pub counters: Counters,
}

impl ProxyState {
    /// The backend for a new flow from `client`: its affinity backend while that is still
    /// a ready backend, else Maglev's choice, passing over `avoid`.
    pub fn pick(
        &self,
        fe: &Frontend,
        client: SocketAddrV4,
        avoid: &[SocketAddrV4],
    ) -> Option<SocketAddrV4> {
        let Some(timeout) = fe.affinity else {
            return fe.pick(client, avoid);
        };
        let now = Instant::now();
        let mut aff = self.affinity.lock().ok()?;
        let key = (fe.key, *client.ip());
        if let Some((b, at)) = aff.get(&key) {
            if now.duration_since(*at) < timeout && fe.backends.contains(b) && !avoid.contains(b) {
                let b = *b;
                aff.insert(key, (b, now));
                return Some(b);
            }
        }
        // Affinity is per client address: hash the address alone.
        let b = fe.pick(SocketAddrV4::new(*client.ip(), 0), avoid)?;
        if aff.len() > 65_536 {
            aff.retain(|_, (_, at)| now.duration_since(*at) < timeout);
        }
        aff.insert(key, (b, now));
        Some(b)
    }

    /// Drops `client`'s affinity on `fe` (its backend refused).
    pub fn forget_affinity(&self, fe: &Frontend, client: SocketAddrV4) {
        if let Ok(mut a) = self.affinity.lock() {
            a.remove(&(fe.key, *client.ip()));
        }
    }
}

/// The Services of the cluster as pods on this node see them (environment variables,
/// resolv.conf); empty until the proxy's watch has listed them.
#[derive(Clone)]
pub struct ServiceView {
    /// Every Service.
    pub services: Store<Service>,
    /// The cluster DNS address.
    pub dns_ip: Ipv4Addr,
    /// The cluster domain.
    pub domain: String,
}

impl std::fmt::Debug for ServiceView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceView")
            .field("dns_ip", &self.dns_ip)
            .finish_non_exhaustive()
    }
}

/// Starts the proxy and the DNS server in this (the node's) network namespace and keeps them
/// following the API; returns the view pods use once the first list of Services is in.
pub async fn start(client: kube::Client, node: String) -> Result<ServiceView, AgentError> {
    let range = Subnet::parse(SERVICE_CIDR).expect("a valid range");
    // The netlink helper runs its own small runtime: off this one's threads.
    tokio::task::spawn_blocking(move || podlet_cni::routing::ensure_local_range(range))
        .await
        .map_err(|e| AgentError::Invalid(format!("service range: {e}")))?
        .map_err(|e| AgentError::Invalid(format!("service range: {e}")))?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| AgentError::Invalid(format!("service proxy listener: {e}")))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| AgentError::Invalid(format!("service proxy listener: {e}")))?;
    let steering =
        steer::Steering::attach(&listener).map_err(|e| AgentError::Invalid(e.to_string()))?;
    let listener = tokio::net::TcpListener::from_std(listener)
        .map_err(|e| AgentError::Invalid(format!("service proxy listener: {e}")))?;
    let state = Arc::new(ProxyState::default());
    tokio::spawn(tcp::serve(listener, state.clone()));

    let zone = Arc::new(ArcSwap::from_pointee(dns::Zone::default()));
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let upstreams = Arc::new(dns::Upstreams::from_resolv_conf(&resolv, DNS_IP));
    let dns_addr = SocketAddrV4::new(DNS_IP, 53);
    let udp = tokio::net::UdpSocket::bind(dns_addr)
        .await
        .map_err(|e| AgentError::Invalid(format!("cluster DNS on {dns_addr}/udp: {e}")))?;
    let tcp = tokio::net::TcpListener::bind(dns_addr)
        .await
        .map_err(|e| AgentError::Invalid(format!("cluster DNS on {dns_addr}/tcp: {e}")))?;
    tokio::spawn(dns::serve_udp(udp, zone.clone(), upstreams.clone()));
    tokio::spawn(dns::serve_tcp(tcp, zone.clone(), upstreams));

    let changed = Arc::new(Notify::new());
    let (services, svc_writer) = reflector::store::<Service>();
    let (slices, slice_writer) = reflector::store::<EndpointSlice>();
    tokio::spawn(follow(
        reflector::reflector(
            svc_writer,
            watcher(Api::all(client.clone()), watcher::Config::default()),
        ),
        changed.clone(),
    ));
    tokio::spawn(follow(
        reflector::reflector(
            slice_writer,
            watcher(Api::all(client), watcher::Config::default()),
        ),
        changed.clone(),
    ));
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        let _ = services.wait_until_ready().await;
        let _ = slices.wait_until_ready().await;
    })
    .await;
    let ctx = BuildContext {
        node,
        dns_ip: DNS_IP,
    };
    tokio::spawn(apply_loop(
        services.clone(),
        slices,
        ctx,
        state,
        steering,
        zone,
        changed,
    ));
    Ok(ServiceView {
        services,
        dns_ip: DNS_IP,
        domain: CLUSTER_DOMAIN.into(),
    })
}

/// Drives a reflector's watch (retrying with backoff), signalling every change.
async fn follow<S, K>(stream: S, changed: Arc<Notify>)
where
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
{
    let stream = stream.default_backoff();
    futures::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        if let Err(e) = ev {
            tracing::warn!(error = %e, "service proxy: watch failed; retrying");
            continue;
        }
        changed.notify_one();
    }
}

/// Rebuilds and swaps the frontends, the steering map, the UDP sockets and the DNS zone after
/// every change (and every 30 s regardless).
async fn apply_loop(
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    ctx: BuildContext,
    state: Arc<ProxyState>,
    mut steering: steer::Steering,
    zone: Arc<ArcSwap<dns::Zone>>,
    changed: Arc<Notify>,
) {
    let mut udp = udp::UdpFrontends::default();
    loop {
        let svcs = services.state();
        let eps = slices.state();
        let table = Arc::new(model::build(&svcs, &eps, &ctx, &state.table.load()));
        let keys: HashSet<steer::SteerKey> = table
            .frontends()
            .filter(|f| f.key.protocol == Protocol::Tcp)
            .map(|f| steer::SteerKey {
                ip: f.key.ip,
                port: f.key.port,
                protocol: f.key.protocol.number(),
            })
            .collect();
        // New frontends are served before they are steered; gone ones stop being steered
        // once the table no longer has them (a connection in between gets a reset).
        state.table.store(table.clone());
        if let Err(e) = steering.set(&keys) {
            tracing::warn!(error = %e, "service proxy: steering update failed");
        }
        udp.sync(&table, &state);
        zone.store(Arc::new(dns::Zone::build(CLUSTER_DOMAIN, &svcs, &eps)));
        tracing::debug!(frontends = keys.len(), "service proxy: table swapped");
        let _ = tokio::time::timeout(Duration::from_secs(30), changed.notified()).await;
        tokio::time::sleep(DEBOUNCE).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn table(affinity: bool, backends: &[&str]) -> ProxyTable {
        let mut spec = json!({"clusterIP": "10.43.1.2", "ports": [{"name": "http", "port": 80}]});
        if affinity {
            spec["sessionAffinity"] = json!("ClientIP");
            spec["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 60}});
        }
        let svc: Service = serde_json::from_value(
            json!({"metadata": {"name": "web", "namespace": "demo"}, "spec": spec}),
        )
        .unwrap();
        let eps: Vec<serde_json::Value> = backends
            .iter()
            .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}}))
            .collect();
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "demo", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}], "endpoints": eps}))
        .unwrap();
        let ctx = BuildContext {
            node: "n1".into(),
            dns_ip: DNS_IP,
        };
        model::build(
            &[Arc::new(svc)],
            &[Arc::new(slice)],
            &ctx,
            &ProxyTable::default(),
        )
    }

    #[test]
    fn client_ip_affinity_keeps_a_client_on_its_backend_while_it_is_ready() {
        let state = ProxyState::default();
        let vip: SocketAddrV4 = "10.43.1.2:80".parse().unwrap();
        let t = table(true, &["10.42.0.5", "10.42.0.6", "10.42.0.7"]);
        let fe = t.lookup(vip, Protocol::Tcp).unwrap().clone();
        let client = |port| SocketAddrV4::new(Ipv4Addr::new(10, 42, 1, 9), port);
        let first = state.pick(&fe, client(40_000), &[]).unwrap();
        for port in 40_001..40_100 {
            assert_eq!(state.pick(&fe, client(port), &[]), Some(first));
        }
        // Its backend gone: the client moves, and stays on the new one.
        let rest: Vec<String> = ["10.42.0.5", "10.42.0.6", "10.42.0.7"]
            .iter()
            .filter(|ip| **ip != first.ip().to_string())
            .map(|s| s.to_string())
            .collect();
        let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
        let t2 = table(true, &rest);
        let fe2 = t2.lookup(vip, Protocol::Tcp).unwrap().clone();
        let moved = state.pick(&fe2, client(41_000), &[]).unwrap();
        assert_ne!(moved, first);
        assert_eq!(state.pick(&fe2, client(41_001), &[]), Some(moved));
        // Without affinity, one client's connections spread.
        let plain = table(false, &["10.42.0.5", "10.42.0.6", "10.42.0.7"]);
        let fe3 = plain.lookup(vip, Protocol::Tcp).unwrap().clone();
        let seen: HashSet<SocketAddrV4> = (40_000..40_100)
            .filter_map(|p| state.pick(&fe3, client(p), &[]))
            .collect();
        assert_eq!(seen.len(), 3);
    }
}
