//! What a pod's containers see of Services: `/etc/resolv.conf` by `dnsPolicy` and `dnsConfig`
//! (kubelet's rules), and the Docker-link-style Service environment variables for the
//! Services of the pod's namespace (and `kubernetes` from `default`) that exist when a
//! container starts.

use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service};

/// The pod's `resolv.conf`; `None`: the node's own (`dnsPolicy: Default`, or host-network
/// pods under `ClusterFirst`).
pub fn resolv_conf(
    pod: &Pod,
    dns_ip: Ipv4Addr,
    domain: &str,
    host_resolv: &str,
) -> Result<Option<String>, String> {
    let spec = pod.spec.as_ref().ok_or("the pod has no spec")?;
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let host_network = spec.host_network == Some(true);
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let host_search: Vec<String> = host_resolv
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            l.strip_prefix("search ").or(l.strip_prefix("domain "))
        })
        .flat_map(|s| s.split_whitespace().map(str::to_string))
        .collect();
    let host_servers: Vec<String> = host_resolv
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver "))
        .map(|s| s.trim().to_string())
        .collect();
    type Options = Vec<(String, Option<String>)>;
    let (mut servers, mut search, mut options): (Vec<String>, Vec<String>, Options) = match policy {
        "ClusterFirst" if host_network => return Ok(None),
        "ClusterFirst" | "ClusterFirstWithHostNet" => (
            vec![dns_ip.to_string()],
            [
                format!("{ns}.svc.{domain}"),
                format!("svc.{domain}"),
                domain.to_string(),
            ]
            .into_iter()
            .chain(host_search)
            .collect(),
            vec![("ndots".into(), Some("5".into()))],
        ),
        "Default" => (host_servers, host_search, Vec::new()),
        "None" => (Vec::new(), Vec::new(), Vec::new()),
        other => {
            return Err(format!(
            "dnsPolicy {other:?}: expected ClusterFirst, ClusterFirstWithHostNet, Default or None"
        ))
        }
    };
    if let Some(c) = &spec.dns_config {
        servers.extend(c.nameservers.iter().flatten().cloned());
        search.extend(c.searches.iter().flatten().cloned());
        for o in c.options.iter().flatten() {
            let Some(name) = o.name.clone() else { continue };
            options.retain(|(n, _)| *n != name);
            options.push((name, o.value.clone()));
        }
    } else if policy == "None" {
        return Err("dnsPolicy None needs a dnsConfig".into());
    }
    if policy == "Default" && spec.dns_config.is_none() {
        return Ok(None);
    }
    if servers.is_empty() && policy == "None" {
        return Err("dnsPolicy None: dnsConfig.nameservers must name at least one server".into());
    }
    // kubelet's limits: 3 nameservers, 32 search domains.
    servers.truncate(3);
    search.dedup();
    search.truncate(32);
    let mut out = String::new();
    for s in &servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    if !options.is_empty() {
        let opts: Vec<String> = options
            .iter()
            .map(|(n, v)| match v {
                Some(v) => format!("{n}:{v}"),
                None => n.clone(),
            })
            .collect();
        out.push_str(&format!("options {}\n", opts.join(" ")));
    }
    Ok(Some(out))
}

fn env_name(service: &str) -> String {
    service.to_ascii_uppercase().replace('-', "_")
}

/// The Service environment variables for a container of `pod` (none when
/// `enableServiceLinks: false`, except `kubernetes`'s, as kubelet does).
pub fn service_env(pod: &Pod, services: &[Arc<Service>]) -> Vec<(String, String)> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let mut chosen: Vec<&Service> = services
        .iter()
        .map(|s| &**s)
        .filter(|s| {
            let sns = s.metadata.namespace.as_deref();
            let name = s.metadata.name.as_deref();
            (links && sns == Some(ns)) || (sns == Some("default") && name == Some("kubernetes"))
        })
        .filter(|s| {
            s.spec
                .as_ref()
                .and_then(|sp| sp.cluster_ip.as_deref())
                .is_some_and(|ip| !ip.is_empty() && ip != "None")
        })
        .collect();
    chosen.sort_by_key(|s| s.metadata.name.clone());
    chosen.dedup_by_key(|s| s.metadata.name.clone());
    let mut out = Vec::new();
    for s in chosen {
        let spec = s.spec.as_ref().expect("filtered on spec");
        let ip = spec.cluster_ip.clone().unwrap_or_default();
        let prefix = env_name(s.metadata.name.as_deref().unwrap_or(""));
        let ports = spec.ports.clone().unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        out.push((format!("{prefix}_SERVICE_HOST"), ip.clone()));
        out.push((format!("{prefix}_SERVICE_PORT"), first.port.to_string()));
        for p in &ports {
            if let Some(n) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((
                    format!("{prefix}_SERVICE_PORT_{}", env_name(n)),
                    p.port.to_string(),
                ));
            }
        }
        let proto_of = |p: &k8s_openapi::api::core::v1::ServicePort| {
            p.protocol.clone().unwrap_or_else(|| "TCP".into())
        };
        out.push((
            format!("{prefix}_PORT"),
            format!(
                "{}://{ip}:{}",
                proto_of(first).to_ascii_lowercase(),
                first.port
            ),
        ));
        for p in &ports {
            let proto = proto_of(p);
            let base = format!("{prefix}_PORT_{}_{proto}", p.port);
            out.push((
                base.clone(),
                format!("{}://{ip}:{}", proto.to_ascii_lowercase(), p.port),
            ));
            out.push((format!("{base}_PROTO"), proto.to_ascii_lowercase()));
            out.push((format!("{base}_PORT"), p.port.to_string()));
            out.push((format!("{base}_ADDR"), ip.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "p", "namespace": "demo"}, "spec": spec}),
        )
        .unwrap()
    }

    const HOST: &str = "search corp.example\nnameserver 192.0.2.1\n";

    #[test]
    fn dns_policies_give_kubelets_resolv_conf() {
        let dns = Ipv4Addr::new(10, 43, 0, 10);
        let first = resolv_conf(&pod(json!({"containers": []})), dns, "cluster.local", HOST)
            .unwrap()
            .unwrap();
        assert_eq!(
            first,
            "nameserver 10.43.0.10\nsearch demo.svc.cluster.local svc.cluster.local cluster.local corp.example\noptions ndots:5\n"
        );
        assert_eq!(
            resolv_conf(
                &pod(json!({"containers": [], "dnsPolicy": "Default"})),
                dns,
                "cluster.local",
                HOST
            ),
            Ok(None)
        );
        assert_eq!(
            resolv_conf(
                &pod(json!({"containers": [], "hostNetwork": true})),
                dns,
                "cluster.local",
                HOST
            ),
            Ok(None)
        );
        let custom = resolv_conf(
            &pod(json!({"containers": [], "dnsPolicy": "None",
                "dnsConfig": {"nameservers": ["192.0.2.9"], "searches": ["a.example"],
                              "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}})),
            dns,
            "cluster.local",
            HOST,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            custom,
            "nameserver 192.0.2.9\nsearch a.example\noptions ndots:2 edns0\n"
        );
        let merged = resolv_conf(
            &pod(json!({"containers": [], "dnsConfig": {"options": [{"name": "ndots", "value": "1"}]}})),
            dns,
            "cluster.local",
            HOST,
        )
        .unwrap()
        .unwrap();
        assert!(merged.ends_with("options ndots:1\n"), "{merged}");
        assert!(resolv_conf(
            &pod(json!({"containers": [], "dnsPolicy": "None"})),
            dns,
            "cluster.local",
            HOST
        )
        .unwrap_err()
        .contains("dnsConfig"));
        assert!(resolv_conf(
            &pod(json!({"containers": [], "dnsPolicy": "Bogus"})),
            dns,
            "cluster.local",
            HOST
        )
        .unwrap_err()
        .contains("Bogus"));
    }

    #[test]
    fn service_links_follow_kubelets_names() {
        let svcs: Vec<Arc<Service>> = [
            json!({"metadata": {"name": "my-web", "namespace": "demo"},
                   "spec": {"clusterIP": "10.43.1.2", "ports": [{"name": "http", "port": 80}, {"port": 53, "protocol": "UDP"}]}}),
            json!({"metadata": {"name": "other", "namespace": "elsewhere"},
                   "spec": {"clusterIP": "10.43.1.3", "ports": [{"port": 1}]}}),
            json!({"metadata": {"name": "db", "namespace": "demo"},
                   "spec": {"clusterIP": "None", "ports": [{"port": 5432}]}}),
            json!({"metadata": {"name": "kubernetes", "namespace": "default"},
                   "spec": {"clusterIP": "10.43.0.1", "ports": [{"name": "https", "port": 443}]}}),
        ]
        .into_iter()
        .map(|v| Arc::new(serde_json::from_value(v).unwrap()))
        .collect();
        let env: std::collections::BTreeMap<String, String> =
            service_env(&pod(json!({"containers": []})), &svcs)
                .into_iter()
                .collect();
        assert_eq!(env["MY_WEB_SERVICE_HOST"], "10.43.1.2");
        assert_eq!(env["MY_WEB_SERVICE_PORT"], "80");
        assert_eq!(env["MY_WEB_SERVICE_PORT_HTTP"], "80");
        assert_eq!(env["MY_WEB_PORT"], "tcp://10.43.1.2:80");
        assert_eq!(env["MY_WEB_PORT_53_UDP"], "udp://10.43.1.2:53");
        assert_eq!(env["MY_WEB_PORT_80_TCP_ADDR"], "10.43.1.2");
        assert_eq!(env["KUBERNETES_SERVICE_HOST"], "10.43.0.1");
        assert!(!env
            .keys()
            .any(|k| k.starts_with("OTHER_") || k.starts_with("DB_")));
        let off = service_env(
            &pod(json!({"containers": [], "enableServiceLinks": false})),
            &svcs,
        );
        assert!(
            off.iter().all(|(k, _)| k.starts_with("KUBERNETES_")),
            "{off:?}"
        );
    }
}
