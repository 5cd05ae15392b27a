//! What the proxy serves, built off the hot path from Services and EndpointSlices: one
//! [`Frontend`] per ClusterIP port and per NodePort, each with the backends that may take new
//! connections and their Maglev table. A whole [`ProxyTable`] is built and then swapped in at
//! once (eBPF-map style), so a connection sees either the old or the new set, never a mix.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::maglev::{table_size_for, MaglevTable};

/// A Service port's transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP (steered by `sk_lookup`).
    Tcp,
    /// UDP (a socket per frontend).
    Udp,
}

impl Protocol {
    fn parse(s: Option<&str>) -> Option<Protocol> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            _ => None,
        }
    }

    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }
}

/// Where a frontend listens: a ClusterIP port, or a NodePort on every node address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrontendKey {
    /// The ClusterIP, or `0.0.0.0` for a NodePort.
    pub ip: Ipv4Addr,
    /// The port.
    pub port: u16,
    /// The transport.
    pub protocol: Protocol,
}

/// One address:port the proxy answers and where its traffic may go.
#[derive(Debug)]
pub struct Frontend {
    /// `namespace/name:port-name` for logs and counters.
    pub service: String,
    /// Where it listens.
    pub key: FrontendKey,
    /// Ready, not terminating endpoints this node may send new connections to.
    pub backends: Vec<SocketAddrV4>,
    /// The backends' Maglev table (backend names are `ip:port`).
    pub table: Arc<MaglevTable>,
    /// `sessionAffinity: ClientIP`: how long a client keeps its backend.
    pub affinity: Option<Duration>,
}

impl Frontend {
    /// The backend for a flow from `client`, passing over backends in `avoid`.
    pub fn pick(&self, client: SocketAddrV4, avoid: &[SocketAddrV4]) -> Option<SocketAddrV4> {
        let mut key = [0u8; 13];
        key[..4].copy_from_slice(&client.ip().octets());
        key[4..6].copy_from_slice(&client.port().to_be_bytes());
        key[6..10].copy_from_slice(&self.key.ip.octets());
        key[10..12].copy_from_slice(&self.key.port.to_be_bytes());
        key[12] = self.key.protocol.number();
        let avoid: Vec<String> = avoid.iter().map(ToString::to_string).collect();
        let avoid: Vec<&str> = avoid.iter().map(String::as_str).collect();
        self.table
            .lookup_avoiding(&key, &avoid)
            .and_then(|b| b.parse().ok())
    }
}

/// Every frontend of the node, looked up by destination.
#[derive(Debug, Default)]
pub struct ProxyTable {
    frontends: HashMap<FrontendKey, Arc<Frontend>>,
}

impl ProxyTable {
    /// The frontend for a connection to `dst`: its ClusterIP port, else a NodePort.
    pub fn lookup(&self, dst: SocketAddrV4, protocol: Protocol) -> Option<&Arc<Frontend>> {
        let exact = FrontendKey {
            ip: *dst.ip(),
            port: dst.port(),
            protocol,
        };
        self.frontends.get(&exact).or_else(|| {
            self.frontends.get(&FrontendKey {
                ip: Ipv4Addr::UNSPECIFIED,
                ..exact
            })
        })
    }

    /// Every frontend.
    pub fn frontends(&self) -> impl Iterator<Item = &Arc<Frontend>> {
        self.frontends.values()
    }
}

/// How the table is built for this node.
#[derive(Debug, Clone)]
pub struct BuildContext {
    /// This node's name (for `Local` traffic policies).
    pub node: String,
    /// The cluster DNS address: served by the agent itself, never proxied.
    pub dns_ip: Ipv4Addr,
}

/// One endpoint of a Service port as an EndpointSlice gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    addr: SocketAddrV4,
    node: Option<String>,
}

/// The usable endpoints of each Service port, by `(namespace, service, port name, protocol)`.
type EndpointIndex = HashMap<(String, String, String, Protocol), Vec<Endpoint>>;

fn index_endpoints(slices: &[Arc<EndpointSlice>]) -> EndpointIndex {
    let mut out: EndpointIndex = HashMap::new();
    for s in slices {
        if s.address_type != "IPv4" {
            continue;
        }
        let ns = s.metadata.namespace.clone().unwrap_or_default();
        let Some(svc) = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"))
        else {
            continue;
        };
        for p in s.ports.iter().flatten() {
            let (Some(port), Some(proto)) = (p.port, Protocol::parse(p.protocol.as_deref())) else {
                continue;
            };
            let entry = out
                .entry((
                    ns.clone(),
                    svc.clone(),
                    p.name.clone().unwrap_or_default(),
                    proto,
                ))
                .or_default();
            for e in s.endpoints.iter().flatten() {
                let c = e.conditions.as_ref();
                // Kubernetes: a nil `ready` means ready; terminating endpoints finish what they
                // have and take nothing new.
                let ready = c.and_then(|c| c.ready).unwrap_or(true);
                let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
                if !ready || terminating {
                    continue;
                }
                for a in &e.addresses {
                    if let Ok(ip) = a.parse::<Ipv4Addr>() {
                        entry.push(Endpoint {
                            addr: SocketAddrV4::new(ip, port as u16),
                            node: e.node_name.clone(),
                        });
                    }
                }
            }
        }
    }
    for v in out.values_mut() {
        v.sort_by_key(|e| e.addr);
        v.dedup_by_key(|e| e.addr);
    }
    out
}

/// Builds the table from the current objects; Maglev tables of frontends whose backends did
/// not change are taken from `prev` rather than rebuilt.
pub fn build(
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
    ctx: &BuildContext,
    prev: &ProxyTable,
) -> ProxyTable {
    let endpoints = index_endpoints(slices);
    let mut tables: BTreeMap<Vec<SocketAddrV4>, Arc<MaglevTable>> = prev
        .frontends
        .values()
        .map(|f| (f.backends.clone(), f.table.clone()))
        .collect();
    let mut frontends = HashMap::new();
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let cluster_ip = spec
            .cluster_ip
            .as_deref()
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok());
        let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            let secs = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .unwrap_or(10_800);
            Duration::from_secs(secs.max(1) as u64)
        });
        let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
        let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
        let node_ports = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
        for sp in spec.ports.iter().flatten() {
            let Some(proto) = Protocol::parse(sp.protocol.as_deref()) else {
                continue;
            };
            let port_name = sp.name.clone().unwrap_or_default();
            let eps = endpoints
                .get(&(ns.clone(), name.clone(), port_name.clone(), proto))
                .cloned()
                .unwrap_or_default();
            let local: Vec<SocketAddrV4> = eps
                .iter()
                .filter(|e| e.node.as_deref() == Some(ctx.node.as_str()))
                .map(|e| e.addr)
                .collect();
            let all: Vec<SocketAddrV4> = eps.iter().map(|e| e.addr).collect();
            let mut add = |ip: Ipv4Addr, port: i32, backends: &Vec<SocketAddrV4>| {
                let Ok(port) = u16::try_from(port) else {
                    return;
                };
                let table = tables
                    .entry(backends.clone())
                    .or_insert_with(|| {
                        let names: Vec<String> = backends.iter().map(ToString::to_string).collect();
                        Arc::new(
                            MaglevTable::new(&names, table_size_for(names.len()))
                                .expect("a prime size and distinct backends"),
                        )
                    })
                    .clone();
                let key = FrontendKey {
                    ip,
                    port,
                    protocol: proto,
                };
                frontends.insert(
                    key,
                    Arc::new(Frontend {
                        service: format!("{ns}/{name}:{port_name}"),
                        key,
                        backends: backends.clone(),
                        table,
                        affinity,
                    }),
                );
            };
            if let Some(ip) = cluster_ip.filter(|ip| *ip != ctx.dns_ip) {
                add(ip, sp.port, if internal_local { &local } else { &all });
            }
            if let Some(np) = sp.node_port.filter(|_| node_ports) {
                add(
                    Ipv4Addr::UNSPECIFIED,
                    np,
                    if external_local { &local } else { &all },
                );
            }
        }
    }
    ProxyTable { frontends }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Arc<Service> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn slice(v: serde_json::Value) -> Arc<EndpointSlice> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn ctx() -> BuildContext {
        BuildContext {
            node: "n1".into(),
            dns_ip: Ipv4Addr::new(10, 43, 0, 10),
        }
    }

    fn web() -> (Vec<Arc<Service>>, Vec<Arc<EndpointSlice>>) {
        let s = svc(json!({"metadata": {"name": "web", "namespace": "demo"},
            "spec": {"type": "NodePort", "clusterIP": "10.43.1.2", "externalTrafficPolicy": "Local",
                     "ports": [{"name": "http", "port": 80, "nodePort": 30080, "targetPort": 8080},
                               {"name": "dns", "port": 53, "protocol": "UDP"}]}}));
        let e = slice(json!({"metadata": {"name": "web-x", "namespace": "demo",
                                      "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 5353, "protocol": "UDP"}],
        "endpoints": [
            {"addresses": ["10.42.1.5"], "nodeName": "n1", "conditions": {"ready": true}},
            {"addresses": ["10.42.2.5"], "nodeName": "n2", "conditions": {"ready": true}},
            {"addresses": ["10.42.2.6"], "nodeName": "n2", "conditions": {"ready": false}},
            {"addresses": ["10.42.2.7"], "nodeName": "n2", "conditions": {"ready": true, "terminating": true}}
        ]}));
        (vec![s], vec![e])
    }

    #[test]
    fn cluster_ips_and_node_ports_get_ready_backends_and_local_policies() {
        let (s, e) = web();
        let t = build(&s, &e, &ctx(), &ProxyTable::default());
        let http = t
            .lookup("10.43.1.2:80".parse().unwrap(), Protocol::Tcp)
            .unwrap();
        assert_eq!(
            http.backends,
            vec![
                "10.42.1.5:8080".parse().unwrap(),
                "10.42.2.5:8080".parse().unwrap()
            ]
        );
        assert_eq!(http.service, "demo/web:http");
        let dns = t
            .lookup("10.43.1.2:53".parse().unwrap(), Protocol::Udp)
            .unwrap();
        assert_eq!(dns.backends.len(), 2);
        assert_eq!(dns.backends[0].port(), 5353);
        // externalTrafficPolicy: Local → only this node's endpoint behind the NodePort, on
        // any local address.
        let np = t
            .lookup("192.168.5.5:30080".parse().unwrap(), Protocol::Tcp)
            .unwrap();
        assert_eq!(np.backends, vec!["10.42.1.5:8080".parse().unwrap()]);
        assert!(t
            .lookup("10.43.1.2:81".parse().unwrap(), Protocol::Tcp)
            .is_none());
        assert!(t
            .lookup("10.43.1.2:80".parse().unwrap(), Protocol::Udp)
            .is_none());
    }

    #[test]
    fn unchanged_backends_keep_their_table_and_dns_headless_and_external_names_are_skipped() {
        let (mut s, e) = web();
        let first = build(&s, &e, &ctx(), &ProxyTable::default());
        s.push(svc(
            json!({"metadata": {"name": "dns", "namespace": "kube-system"},
            "spec": {"clusterIP": "10.43.0.10", "ports": [{"port": 53, "protocol": "UDP"}]}}),
        ));
        s.push(svc(json!({"metadata": {"name": "db", "namespace": "demo"},
            "spec": {"clusterIP": "None", "ports": [{"port": 5432}]}})));
        s.push(svc(
            json!({"metadata": {"name": "ext", "namespace": "demo"},
            "spec": {"type": "ExternalName", "externalName": "example.org"}}),
        ));
        let second = build(&s, &e, &ctx(), &first);
        assert_eq!(second.frontends().count(), first.frontends().count());
        let a = first
            .lookup("10.43.1.2:80".parse().unwrap(), Protocol::Tcp)
            .unwrap();
        let b = second
            .lookup("10.43.1.2:80".parse().unwrap(), Protocol::Tcp)
            .unwrap();
        assert!(Arc::ptr_eq(&a.table, &b.table));
    }

    #[test]
    fn flows_spread_and_a_refusing_backend_is_skipped() {
        let (s, e) = web();
        let t = build(&s, &e, &ctx(), &ProxyTable::default());
        let f = t
            .lookup("10.43.1.2:80".parse().unwrap(), Protocol::Tcp)
            .unwrap();
        let mut counts: HashMap<SocketAddrV4, usize> = HashMap::new();
        for port in 20_000..23_000u16 {
            let c = SocketAddrV4::new(Ipv4Addr::new(10, 42, 0, 9), port);
            *counts.entry(f.pick(c, &[]).unwrap()).or_default() += 1;
        }
        for n in counts.values() {
            assert!((1350..=1650).contains(n), "{counts:?}");
        }
        let c = SocketAddrV4::new(Ipv4Addr::new(10, 42, 0, 9), 40_000);
        let first = f.pick(c, &[]).unwrap();
        let second = f.pick(c, &[first]).unwrap();
        assert_ne!(first, second);
        assert!(f.pick(c, &[first, second]).is_none());
    }
}
