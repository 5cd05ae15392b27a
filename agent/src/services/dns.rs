//! Cluster DNS served by the agent on its own node (NodeLocal-DNSCache style) at the cluster
//! DNS address, over UDP and TCP, with `hickory-proto` for the wire format.
//!
//! Names under the cluster domain come from Services and EndpointSlices (Kubernetes' DNS
//! specification): `<svc>.<ns>.svc.<domain>` → the ClusterIP, or the ready endpoints of a
//! headless Service; `<hostname>.<svc>.<ns>.svc.<domain>` for endpoints with a hostname;
//! `_<port>._<proto>.<svc>.<ns>.svc.<domain>` SRV records for named ports; a CNAME for an
//! ExternalName Service; `a-b-c-d.<ns>.pod.<domain>`; PTR records (`d.c.b.a.in-addr.arpa`) for
//! ClusterIPs and for the endpoints of headless Services. Anything else — reverse names of
//! other addresses included — is forwarded to the node's own resolvers.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, PTR, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// The TTL of cluster records (CoreDNS's `kubernetes` plugin default).
pub const TTL: u32 = 5;
/// How long a forwarded query may take.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);

/// The records of the cluster domain, built off the hot path and swapped whole.
#[derive(Debug, Default)]
pub struct Zone {
    domain: String,
    records: HashMap<String, Vec<RData>>,
}

fn fqdn(s: &str) -> String {
    let s = s.to_ascii_lowercase();
    if s.ends_with('.') {
        s
    } else {
        format!("{s}.")
    }
}

/// `d.c.b.a.in-addr.arpa.` for `a.b.c.d`.
fn reverse_name(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
}

fn name(s: &str) -> Option<Name> {
    Name::from_ascii(fqdn(s)).ok()
}

impl Zone {
    /// Builds the zone of `domain` (e.g. `cluster.local`).
    pub fn build(domain: &str, services: &[Arc<Service>], slices: &[Arc<EndpointSlice>]) -> Zone {
        let domain = fqdn(domain);
        let mut records: HashMap<String, Vec<RData>> = HashMap::new();
        let mut add = |n: String, r: RData| records.entry(n).or_default().push(r);
        for svc in services {
            let (Some(ns), Some(svc_name), Some(spec)) = (
                svc.metadata.namespace.as_deref(),
                svc.metadata.name.as_deref(),
                svc.spec.as_ref(),
            ) else {
                continue;
            };
            let base = format!("{svc_name}.{ns}.svc.{domain}");
            if spec.type_.as_deref() == Some("ExternalName") {
                if let Some(target) = spec.external_name.as_deref().and_then(name) {
                    add(base, RData::CNAME(CNAME(target)));
                }
                continue;
            }
            let headless = spec.cluster_ip.as_deref() == Some("None");
            // Headless: one A record per ready endpoint, and a name per endpoint hostname.
            let mut targets: Vec<(String, Ipv4Addr)> = Vec::new();
            if headless {
                let ours = slices.iter().filter(|s| {
                    s.metadata.namespace.as_deref() == Some(ns)
                        && s.metadata
                            .labels
                            .as_ref()
                            .and_then(|l| l.get("kubernetes.io/service-name"))
                            .map(String::as_str)
                            == Some(svc_name)
                });
                for s in ours {
                    for e in s.endpoints.iter().flatten() {
                        let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                        if !ready && spec.publish_not_ready_addresses != Some(true) {
                            continue;
                        }
                        for ip in e
                            .addresses
                            .iter()
                            .filter_map(|a| a.parse::<Ipv4Addr>().ok())
                        {
                            add(base.clone(), RData::A(A(ip)));
                            let host = e
                                .hostname
                                .clone()
                                .unwrap_or_else(|| ip.to_string().replace('.', "-"));
                            let host_name = format!("{host}.{base}");
                            add(host_name.clone(), RData::A(A(ip)));
                            if let Some(n) = name(&host_name) {
                                add(reverse_name(ip), RData::PTR(PTR(n)));
                            }
                            targets.push((host_name, ip));
                        }
                    }
                }
            } else if let Some(ip) = spec.cluster_ip.as_deref().and_then(|i| i.parse().ok()) {
                add(base.clone(), RData::A(A(ip)));
                if let Some(n) = name(&base) {
                    add(reverse_name(ip), RData::PTR(PTR(n)));
                }
            }
            for p in spec.ports.iter().flatten() {
                let Some(port_name) = p.name.as_deref().filter(|n| !n.is_empty()) else {
                    continue;
                };
                let proto = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
                let srv_name = format!("_{port_name}._{proto}.{base}");
                let Ok(port) = u16::try_from(p.port) else {
                    continue;
                };
                if headless {
                    for (t, _) in &targets {
                        if let Some(t) = name(t) {
                            add(srv_name.clone(), RData::SRV(SRV::new(0, 100, port, t)));
                        }
                    }
                } else if let Some(t) = name(&base) {
                    add(srv_name, RData::SRV(SRV::new(0, 100, port, t)));
                }
            }
        }
        Zone { domain, records }
    }

    /// Whether the zone answers `qname` (lower case, fully qualified): every name inside the
    /// cluster domain, and the reverse names of the addresses it knows.
    fn owns(&self, qname: &str) -> bool {
        qname == self.domain
            || qname.ends_with(&format!(".{}", self.domain))
            || (qname.ends_with(".in-addr.arpa.") && self.records.contains_key(qname))
    }

    /// The records of `qname`, including `a-b-c-d.<ns>.pod.<domain>` names.
    fn lookup(&self, qname: &str) -> Option<Vec<RData>> {
        if let Some(r) = self.records.get(qname) {
            return Some(r.clone());
        }
        let rest = qname.strip_suffix(&format!(".pod.{}", self.domain))?;
        let (dashed, _ns) = rest.split_once('.')?;
        let ip: Ipv4Addr = dashed.replace('-', ".").parse().ok()?;
        Some(vec![RData::A(A(ip))])
    }

    /// The SOA record of the cluster domain (for negative answers).
    fn soa(&self) -> Option<Record> {
        let zone = Name::from_ascii(&self.domain).ok()?;
        let ns = Name::from_ascii(format!("ns.dns.{}", self.domain)).ok()?;
        let mbox = Name::from_ascii(format!("hostmaster.{}", self.domain)).ok()?;
        Some(Record::from_rdata(
            zone,
            TTL,
            RData::SOA(SOA::new(ns, mbox, 1, 7200, 1800, 86400, TTL)),
        ))
    }

    /// The answer to `query` if the cluster domain owns its name; `None`: forward it.
    pub fn answer(&self, query: &Message) -> Option<Message> {
        let q = query.queries.first()?;
        let qname = fqdn(&q.name().to_ascii());
        if !self.owns(&qname) {
            return None;
        }
        let mut resp = Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
        resp.metadata.authoritative = true;
        resp.metadata.recursion_desired = query.metadata.recursion_desired;
        resp.metadata.recursion_available = true;
        resp.add_query(q.clone());
        let Some(found) = self.lookup(&qname) else {
            resp.metadata.response_code = ResponseCode::NXDomain;
            resp.add_authorities(self.soa());
            return Some(resp);
        };
        let want = q.query_type();
        let mut answers: Vec<Record> = found
            .into_iter()
            .filter(|r| {
                let t = r.record_type();
                t == want || t == RecordType::CNAME || want == RecordType::ANY
            })
            .map(|r| Record::from_rdata(q.name().clone(), TTL, r))
            .collect();
        if answers.is_empty() {
            resp.add_authorities(self.soa());
        }
        // SRV answers carry their targets' addresses, as CoreDNS does.
        let mut extra = Vec::new();
        for a in &answers {
            if let RData::SRV(srv) = &a.data {
                let target = fqdn(&srv.target.to_ascii());
                for r in self.lookup(&target).unwrap_or_default() {
                    extra.push(Record::from_rdata(srv.target.clone(), TTL, r));
                }
            }
        }
        resp.add_answers(answers.drain(..));
        resp.add_additionals(extra);
        Some(resp)
    }
}

/// Where the agent's DNS forwards names outside the cluster domain.
#[derive(Debug, Clone, Default)]
pub struct Upstreams(pub Vec<SocketAddr>);

impl Upstreams {
    /// The `nameserver` lines of a resolv.conf, less `skip` (the cluster DNS itself).
    pub fn from_resolv_conf(text: &str, skip: Ipv4Addr) -> Upstreams {
        Upstreams(
            text.lines()
                .filter_map(|l| l.trim().strip_prefix("nameserver"))
                .filter_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
                .filter(|ip| *ip != std::net::IpAddr::V4(skip))
                .map(|ip| SocketAddr::new(ip, 53))
                .collect(),
        )
    }
}

/// The answer to the raw query `q`: from the zone, forwarded, or an error message; `None`
/// when it cannot even be parsed.
pub async fn respond(q: &[u8], zone: &ArcSwap<Zone>, up: &Upstreams) -> Option<Vec<u8>> {
    let msg = Message::from_vec(q).ok()?;
    if msg.metadata.message_type != MessageType::Query {
        return None;
    }
    if msg.metadata.op_code != OpCode::Query || msg.queries.len() != 1 {
        let code = if msg.metadata.op_code == OpCode::Query {
            ResponseCode::FormErr
        } else {
            ResponseCode::NotImp
        };
        return Message::error_msg(msg.metadata.id, msg.metadata.op_code, code)
            .to_vec()
            .ok();
    }
    if let Some(a) = zone.load().answer(&msg) {
        return a.to_vec().ok();
    }
    for server in &up.0 {
        if let Some(r) = forward(q, *server).await {
            return Some(r);
        }
    }
    Message::error_msg(msg.metadata.id, OpCode::Query, ResponseCode::ServFail)
        .to_vec()
        .ok()
}

async fn forward(q: &[u8], server: SocketAddr) -> Option<Vec<u8>> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let s = UdpSocket::bind(bind).await.ok()?;
    s.connect(server).await.ok()?;
    s.send(q).await.ok()?;
    let mut buf = vec![0u8; 65_535];
    let n = tokio::time::timeout(FORWARD_TIMEOUT, s.recv(&mut buf))
        .await
        .ok()?
        .ok()?;
    buf.truncate(n);
    Some(buf)
}

/// Serves DNS on UDP `sock` forever.
pub async fn serve_udp(sock: UdpSocket, zone: Arc<ArcSwap<Zone>>, up: Arc<Upstreams>) {
    let sock = Arc::new(sock);
    let mut buf = vec![0u8; 65_535];
    loop {
        let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        let q = buf[..n].to_vec();
        let (sock, zone, up) = (sock.clone(), zone.clone(), up.clone());
        tokio::spawn(async move {
            if let Some(mut r) = respond(&q, &zone, &up).await {
                if r.len() > 512 && !has_edns(&q) {
                    r = truncated(&r).unwrap_or(r);
                }
                let _ = sock.send_to(&r, peer).await;
            }
        });
    }
}

fn has_edns(q: &[u8]) -> bool {
    Message::from_vec(q).is_ok_and(|m| m.edns.is_some())
}

/// The same answer with the TC bit set and no records (the client retries over TCP).
fn truncated(r: &[u8]) -> Option<Vec<u8>> {
    let m = Message::from_vec(r).ok()?;
    m.truncate().to_vec().ok()
}

/// Serves DNS over TCP (length-prefixed messages, several per connection) forever.
pub async fn serve_tcp(listener: TcpListener, zone: Arc<ArcSwap<Zone>>, up: Arc<Upstreams>) {
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        tokio::spawn(tcp_conn(conn, zone.clone(), up.clone()));
    }
}

async fn tcp_conn(mut conn: TcpStream, zone: Arc<ArcSwap<Zone>>, up: Arc<Upstreams>) {
    loop {
        let len = match tokio::time::timeout(Duration::from_secs(10), conn.read_u16()).await {
            Ok(Ok(n)) => n as usize,
            _ => return,
        };
        let mut q = vec![0u8; len];
        if conn.read_exact(&mut q).await.is_err() {
            return;
        }
        let Some(r) = respond(&q, &zone, &up).await else {
            return;
        };
        let Ok(n) = u16::try_from(r.len()) else {
            return;
        };
        if conn.write_u16(n).await.is_err() || conn.write_all(&r).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use serde_json::json;

    fn zone() -> Zone {
        let svcs: Vec<Arc<Service>> = [
            json!({"metadata": {"name": "web", "namespace": "demo"},
                   "spec": {"clusterIP": "10.43.1.2", "ports": [{"name": "http", "port": 80}]}}),
            json!({"metadata": {"name": "db", "namespace": "demo"},
                   "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}}),
            json!({"metadata": {"name": "ext", "namespace": "demo"},
                   "spec": {"type": "ExternalName", "externalName": "example.org"}}),
        ]
        .into_iter()
        .map(|v| Arc::new(serde_json::from_value(v).unwrap()))
        .collect();
        let slices: Vec<Arc<EndpointSlice>> = vec![Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": "db-1", "namespace": "demo", "labels": {"kubernetes.io/service-name": "db"}},
                "addressType": "IPv4",
                "endpoints": [
                    {"addresses": ["10.42.1.7"], "hostname": "db-0", "conditions": {"ready": true}},
                    {"addresses": ["10.42.2.8"], "conditions": {"ready": true}},
                    {"addresses": ["10.42.2.9"], "conditions": {"ready": false}}
                ]}))
            .unwrap(),
        )];
        Zone::build("cluster.local", &svcs, &slices)
    }

    fn ask(z: &Zone, n: &str, t: RecordType) -> Message {
        let mut m = Message::query();
        m.add_query(Query::query(Name::from_ascii(n).unwrap(), t));
        let wire = z
            .answer(&m)
            .expect("in the cluster domain")
            .to_vec()
            .unwrap();
        Message::from_vec(&wire).unwrap()
    }

    fn addrs(m: &Message) -> Vec<String> {
        let mut v: Vec<String> = m
            .answers
            .iter()
            .map(|r| match &r.data {
                RData::A(a) => a.0.to_string(),
                RData::CNAME(c) => c.0.to_ascii(),
                RData::SRV(s) => format!("{}:{}", s.target.to_ascii(), s.port),
                RData::PTR(p) => p.0.to_ascii(),
                other => format!("{other:?}"),
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn services_headless_pods_srv_and_external_names_answer_like_kubernetes_dns() {
        let z = zone();
        assert_eq!(
            addrs(&ask(&z, "web.demo.svc.cluster.local.", RecordType::A)),
            ["10.43.1.2"]
        );
        assert_eq!(
            addrs(&ask(&z, "WEB.demo.svc.cluster.local.", RecordType::A)),
            ["10.43.1.2"]
        );
        assert_eq!(
            addrs(&ask(&z, "db.demo.svc.cluster.local.", RecordType::A)),
            ["10.42.1.7", "10.42.2.8"]
        );
        assert_eq!(
            addrs(&ask(&z, "db-0.db.demo.svc.cluster.local.", RecordType::A)),
            ["10.42.1.7"]
        );
        let srv = ask(
            &z,
            "_http._tcp.web.demo.svc.cluster.local.",
            RecordType::SRV,
        );
        assert_eq!(addrs(&srv), ["web.demo.svc.cluster.local.:80"]);
        assert_eq!(srv.additionals.len(), 1);
        assert_eq!(
            addrs(&ask(&z, "ext.demo.svc.cluster.local.", RecordType::A)),
            ["example.org."]
        );
        assert_eq!(
            addrs(&ask(&z, "10-42-3-4.demo.pod.cluster.local.", RecordType::A)),
            ["10.42.3.4"]
        );
        // A name that exists without the asked type: NOERROR, no answers, the SOA.
        let aaaa = ask(&z, "web.demo.svc.cluster.local.", RecordType::AAAA);
        assert_eq!(aaaa.metadata.response_code, ResponseCode::NoError);
        assert!(aaaa.answers.is_empty() && aaaa.authorities.len() == 1);
        let missing = ask(&z, "nope.demo.svc.cluster.local.", RecordType::A);
        assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
        // Reverse lookups of a ClusterIP and of a headless endpoint; other addresses are not
        // ours.
        assert_eq!(
            addrs(&ask(&z, "2.1.43.10.in-addr.arpa.", RecordType::PTR)),
            ["web.demo.svc.cluster.local."]
        );
        assert_eq!(
            addrs(&ask(&z, "7.1.42.10.in-addr.arpa.", RecordType::PTR)),
            ["db-0.db.demo.svc.cluster.local."]
        );
        let mut rev = Message::query();
        rev.add_query(Query::query(
            Name::from_ascii("9.9.9.9.in-addr.arpa.").unwrap(),
            RecordType::PTR,
        ));
        assert!(z.answer(&rev).is_none());
        // Outside the cluster domain: not ours (forwarded).
        let mut m = Message::query();
        m.add_query(Query::query(
            Name::from_ascii("example.org.").unwrap(),
            RecordType::A,
        ));
        assert!(z.answer(&m).is_none());
    }

    #[tokio::test]
    async fn garbage_gets_no_answer_and_unreachable_upstreams_a_servfail() {
        let z = ArcSwap::from_pointee(zone());
        assert!(respond(b"\x00\x01garbage", &z, &Upstreams::default())
            .await
            .is_none());
        let mut m = Message::query();
        m.add_query(Query::query(
            Name::from_ascii("example.org.").unwrap(),
            RecordType::A,
        ));
        let r = respond(&m.to_vec().unwrap(), &z, &Upstreams::default())
            .await
            .unwrap();
        let r = Message::from_vec(&r).unwrap();
        assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(r.metadata.id, m.metadata.id);
        let up = Upstreams::from_resolv_conf(
            "search x\nnameserver 10.43.0.10\nnameserver 192.0.2.53\n",
            Ipv4Addr::new(10, 43, 0, 10),
        );
        assert_eq!(up.0, vec!["192.0.2.53:53".parse::<SocketAddr>().unwrap()]);
    }
}
