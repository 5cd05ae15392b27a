//! The Services every cluster has: `default/kubernetes` (10.43.0.1:443 → the masters' API
//! port, with an Endpoints object and an EndpointSlice naming each master that started) and
//! `kube-system/kube-dns` (10.43.0.10, answered by every node's agent itself).

use std::net::{Ipv4Addr, SocketAddr};

use serde_json::{json, Value};

use crate::api::codec::Codec;
use crate::store::{Store, StoreError};

/// The `kubernetes` Service's ClusterIP (the first address of the Service range).
pub const KUBERNETES_IP: &str = "10.43.0.1";
/// The cluster DNS ClusterIP.
pub const DNS_IP: &str = "10.43.0.10";

/// Why the default Services could not be written.
#[derive(Debug, thiserror::Error)]
pub enum DefaultServicesError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An object could not be encoded or decoded.
    #[error("default services: {0}")]
    Codec(String),
}

fn meta(name: &str, ns: &str, labels: Value) -> Value {
    json!({"name": name, "namespace": ns, "uid": crate::api::objects::new_uid(),
           "creationTimestamp": crate::api::objects::now(), "labels": labels})
}

/// The address pods reach this master's API on: the listen address, else the first IPv4
/// `--tls-san`, else the host's first non-loopback IPv4 address.
pub fn advertise_address(listen: SocketAddr, tls_san: &[String]) -> Option<SocketAddr> {
    let port = listen.port();
    let usable = |ip: &Ipv4Addr| !ip.is_loopback() && !ip.is_unspecified();
    if let SocketAddr::V4(a) = listen {
        if usable(a.ip()) {
            return Some(listen);
        }
    }
    if let Some(ip) = tls_san
        .iter()
        .filter_map(|s| s.parse::<Ipv4Addr>().ok())
        .find(usable)
    {
        return Some(SocketAddr::new(ip.into(), port));
    }
    nix::ifaddrs::getifaddrs().ok()?.find_map(|ifa| {
        let up = ifa.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP);
        let ip = ifa.address?.as_sockaddr_in()?.ip();
        (up && usable(&ip)).then(|| SocketAddr::new(ip.into(), port))
    })
}

async fn create(
    store: &dyn Store,
    codec: &Codec,
    key: &str,
    obj: &Value,
) -> Result<(), DefaultServicesError> {
    let bytes = codec
        .encode(obj)
        .map_err(|e| DefaultServicesError::Codec(e.to_string()))?;
    match store.create(key, bytes).await {
        Ok(_) | Err(StoreError::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Creates the default Services if missing, and adds `advertise` to the `kubernetes`
/// endpoints if it is not there yet.
pub async fn ensure(
    store: &dyn Store,
    codec: &Codec,
    advertise: Option<SocketAddr>,
) -> Result<(), DefaultServicesError> {
    let svc = crate::resources::find("", "v1", "services").expect("services");
    let kubernetes = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": meta("kubernetes", "default", json!({"component": "apiserver", "provider": "kubernetes"})),
        "spec": {"type": "ClusterIP", "clusterIP": KUBERNETES_IP, "clusterIPs": [KUBERNETES_IP],
                 "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "sessionAffinity": "None",
                 "internalTrafficPolicy": "Cluster",
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP",
                            "targetPort": advertise.map_or(6443, |a| a.port())}]},
        "status": {"loadBalancer": {}}});
    create(
        store,
        codec,
        &svc.key(Some("default"), "kubernetes"),
        &kubernetes,
    )
    .await?;
    let dns = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": meta("kube-dns", "kube-system", json!({"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"})),
        "spec": {"type": "ClusterIP", "clusterIP": DNS_IP, "clusterIPs": [DNS_IP],
                 "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "sessionAffinity": "None",
                 "internalTrafficPolicy": "Cluster",
                 "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                           {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]},
        "status": {"loadBalancer": {}}});
    create(
        store,
        codec,
        &svc.key(Some("kube-system"), "kube-dns"),
        &dns,
    )
    .await?;
    let Some(SocketAddr::V4(addr)) = advertise else {
        return Ok(());
    };
    add_master_endpoint(store, codec, addr.ip().to_string(), addr.port()).await
}

/// Adds this master to the `kubernetes` Endpoints and EndpointSlice (compare-and-swap).
async fn add_master_endpoint(
    store: &dyn Store,
    codec: &Codec,
    ip: String,
    port: u16,
) -> Result<(), DefaultServicesError> {
    let eps = crate::resources::find("", "v1", "endpoints").expect("endpoints");
    let slices =
        crate::resources::find("discovery.k8s.io", "v1", "endpointslices").expect("slices");
    let targets = [
        (eps.key(Some("default"), "kubernetes"), true),
        (slices.key(Some("default"), "kubernetes"), false),
    ];
    for (key, is_endpoints) in targets {
        for _ in 0..5 {
            let current = store.get(&key).await?;
            let (mut ips, rev) = match &current {
                Some(kv) => {
                    let v = codec
                        .decode(kv)
                        .map_err(|e| DefaultServicesError::Codec(e.to_string()))?;
                    let list: Vec<String> = if is_endpoints {
                        v["subsets"][0]["addresses"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|a| a["ip"].as_str().map(str::to_string))
                            .collect()
                    } else {
                        v["endpoints"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|e| e["addresses"][0].as_str().map(str::to_string))
                            .collect()
                    };
                    (list, Some(kv.mod_revision))
                }
                None => (Vec::new(), None),
            };
            if ips.contains(&ip) {
                break;
            }
            ips.push(ip.clone());
            ips.sort();
            let obj = if is_endpoints {
                json!({"apiVersion": "v1", "kind": "Endpoints",
                    "metadata": meta("kubernetes", "default", json!({"endpointslice.kubernetes.io/skip-mirror": "true"})),
                    "subsets": [{"addresses": ips.iter().map(|i| json!({"ip": i})).collect::<Vec<_>>(),
                                 "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]})
            } else {
                json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                    "metadata": meta("kubernetes", "default", json!({"kubernetes.io/service-name": "kubernetes"})),
                    "endpoints": ips.iter().map(|i| json!({"addresses": [i], "conditions": {"ready": true, "serving": true, "terminating": false}})).collect::<Vec<_>>(),
                    "ports": [{"name": "https", "port": port, "protocol": "TCP"}]})
            };
            let bytes = codec
                .encode(&obj)
                .map_err(|e| DefaultServicesError::Codec(e.to_string()))?;
            let done = match rev {
                None => match store.create(&key, bytes).await {
                    Err(StoreError::AlreadyExists(_)) => false,
                    r => r.map(|_| true)?,
                },
                Some(rev) => match store.update(&key, bytes, Some(rev)).await {
                    Err(StoreError::Conflict { .. }) => false,
                    r => r.map(|_| true)?,
                },
            };
            if done {
                break;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_advertised_address_is_never_loopback() {
        let listen: SocketAddr = "10.1.2.3:6443".parse().unwrap();
        assert_eq!(advertise_address(listen, &[]), Some(listen));
        let any: SocketAddr = "0.0.0.0:7443".parse().unwrap();
        assert_eq!(
            advertise_address(
                any,
                &[
                    "master.example".into(),
                    "127.0.0.1".into(),
                    "10.9.9.9".into()
                ]
            ),
            Some("10.9.9.9:7443".parse().unwrap())
        );
        if let Some(a) = advertise_address(any, &[]) {
            assert!(!a.ip().is_loopback());
            assert_eq!(a.port(), 7443);
        }
    }
}
