//! This node in the API: its facts (CPUs, memory, addresses), the Node object, the Lease the
//! node lifecycle controller watches (renewed every [`LEASE_INTERVAL`]) and the node conditions
//! (Ready, MemoryPressure, DiskPressure, PIDPressure) read from the host every
//! [`STATUS_INTERVAL`].

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

use crate::{AgentConfig, AgentError};

/// How often the Lease is renewed (the master's node grace is 12 s).
pub const LEASE_INTERVAL: Duration = Duration::from_secs(2);
/// How often the node's conditions are posted.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(10);
/// Pods a node accepts (kubelet's default).
pub const MAX_PODS: u32 = 110;

/// Free disk fraction of the data directory's filesystem below which DiskPressure is reported.
const DISK_PRESSURE_FREE: f64 = 0.10;

/// What the host offers.
#[derive(Debug, Clone, PartialEq)]
pub struct HostFacts {
    /// Online CPUs.
    pub cpus: usize,
    /// Total memory in bytes.
    pub memory_bytes: u64,
    /// Available memory in bytes.
    pub memory_available: u64,
    /// Free fraction of the data directory's filesystem.
    pub disk_free: f64,
    /// Processes running now, and the kernel's pid limit.
    pub pids: (u64, u64),
}

fn meminfo_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// Reads the host's facts (`/proc`, `statvfs` on `data_dir`).
pub fn host_facts(data_dir: &Path) -> HostFacts {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let disk_free = nix::sys::statvfs::statvfs(data_dir)
        .ok()
        .filter(|s| s.blocks() > 0)
        .map(|s| s.blocks_available() as f64 / s.blocks() as f64)
        .unwrap_or(1.0);
    let running = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                })
                .count() as u64
        })
        .unwrap_or(0);
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(32768);
    HostFacts {
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        memory_bytes: meminfo_field(&meminfo, "MemTotal:").unwrap_or(0),
        memory_available: meminfo_field(&meminfo, "MemAvailable:").unwrap_or(0),
        disk_free,
        pids: (running, pid_max),
    }
}

/// The first IPv4 address of an interface that is up and not loopback.
pub fn default_node_ip() -> Option<Ipv4Addr> {
    nix::ifaddrs::getifaddrs().ok()?.find_map(|ifa| {
        let up = ifa.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP);
        let lo = ifa
            .flags
            .contains(nix::net::if_::InterfaceFlags::IFF_LOOPBACK);
        let addr = ifa.address?.as_sockaddr_in()?.ip();
        (up && !lo).then_some(addr)
    })
}

fn condition(type_: &str, on: bool, reason: &str, message: &str, now: &str) -> Value {
    json!({"type": type_, "status": if on {"True"} else {"False"}, "reason": reason,
           "message": message, "lastHeartbeatTime": now, "lastTransitionTime": now})
}

/// The Node's status for `facts` (capacity, allocatable, conditions, addresses, info).
pub fn node_status(cfg: &AgentConfig, facts: &HostFacts) -> Value {
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let memory_pressure = facts.memory_available < cfg.eviction_memory_available;
    let disk_pressure = facts.disk_free < DISK_PRESSURE_FREE;
    let pid_pressure = facts.pids.0 * 10 > facts.pids.1 * 9;
    let capacity = json!({"cpu": facts.cpus.to_string(),
        "memory": format!("{}Ki", facts.memory_bytes / 1024), "pods": MAX_PODS.to_string()});
    json!({
        "capacity": capacity,
        "allocatable": capacity,
        "conditions": [
            condition("MemoryPressure", memory_pressure,
                if memory_pressure {"KubeletHasInsufficientMemory"} else {"KubeletHasSufficientMemory"},
                "podlet agent memory check", &now),
            condition("DiskPressure", disk_pressure,
                if disk_pressure {"KubeletHasDiskPressure"} else {"KubeletHasNoDiskPressure"},
                "podlet agent disk check", &now),
            condition("PIDPressure", pid_pressure,
                if pid_pressure {"KubeletHasInsufficientPID"} else {"KubeletHasSufficientPID"},
                "podlet agent pid check", &now),
            condition("Ready", true, "KubeletReady", "podlet agent is posting ready status", &now),
        ],
        "addresses": [
            {"type": "InternalIP", "address": cfg.node_ip.to_string()},
            {"type": "Hostname", "address": cfg.node_name},
        ],
        "nodeInfo": {
            "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
            "operatingSystem": "linux",
            "kubeletVersion": concat!("v1.36.0-podlet-", env!("CARGO_PKG_VERSION")),
            "containerRuntimeVersion": concat!("podlet://", env!("CARGO_PKG_VERSION")),
            "kernelVersion": nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default(),
            "osImage": "Linux", "kubeProxyVersion": "", "machineID": "", "systemUUID": "", "bootID": ""
        }
    })
}

/// The Node object this agent registers.
pub fn node_object(cfg: &AgentConfig, facts: &HostFacts) -> Value {
    let arch = std::env::consts::ARCH
        .replace("x86_64", "amd64")
        .replace("aarch64", "arm64");
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": cfg.node_name, "labels": {
            "kubernetes.io/hostname": cfg.node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": arch,
            "beta.kubernetes.io/os": "linux",
            "beta.kubernetes.io/arch": arch,
        }},
        "status": node_status(cfg, facts),
    })
}

/// Creates the Node (or refreshes the status of one that exists, after a restart).
pub async fn register(client: &kube::Client, cfg: &AgentConfig) -> Result<(), AgentError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let facts = host_facts(&cfg.data_dir);
    let obj = node_object(cfg, &facts);
    let node: Node = serde_json::from_value(obj.clone())
        .map_err(|e| AgentError::Invalid(format!("node object: {e}")))?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            post_status(client, cfg, &facts).await?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

async fn post_status(
    client: &kube::Client,
    cfg: &AgentConfig,
    facts: &HostFacts,
) -> Result<(), AgentError> {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .patch_status(
            &cfg.node_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": node_status(cfg, facts)})),
        )
        .await?;
    Ok(())
}

/// Renews the node's Lease in `kube-node-lease`.
pub async fn renew_lease(client: &kube::Client, node: &str) -> Result<(), AgentError> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
        .to_string();
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": node},
        "spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": now}});
    leases
        .patch(
            node,
            &PatchParams::apply("podlet-agent").force(),
            &Patch::Apply(&lease),
        )
        .await?;
    Ok(())
}

/// Waits until the master has given this node a pod CIDR; returns it.
pub async fn wait_pod_cidr(client: &kube::Client, node: &str) -> Result<String, AgentError> {
    let nodes: Api<Node> = Api::all(client.clone());
    loop {
        let n = nodes.get(node).await?;
        if let Some(cidr) = n.spec.and_then(|s| s.pod_cidr) {
            return Ok(cidr);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Renews the Lease and posts the node's status until the task is dropped.
pub async fn heartbeat(client: kube::Client, cfg: AgentConfig) {
    let mut last_status = std::time::Instant::now();
    loop {
        if let Err(e) = renew_lease(&client, &cfg.node_name).await {
            tracing::warn!(error = %e, "renewing the node lease");
        }
        if last_status.elapsed() >= STATUS_INTERVAL {
            last_status = std::time::Instant::now();
            let facts = host_facts(&cfg.data_dir);
            if let Err(e) = post_status(&client, &cfg, &facts).await {
                tracing::warn!(error = %e, "posting node status");
            }
        }
        tokio::time::sleep(LEASE_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AgentConfig {
        AgentConfig {
            server: "https://m:6443".into(),
            join_token: "t".into(),
            ca_file: "/ca".into(),
            node_name: "n1".into(),
            node_ip: Ipv4Addr::new(10, 0, 0, 2),
            data_dir: "/d".into(),
            root: "/r".into(),
            state: "/s".into(),
            cgroup_root: None,
            exe: "/podlet".into(),
            cni_plugin_dirs: vec![],
            backend: crate::RouteBackend::HostGw,
            eviction_memory_available: crate::DEFAULT_EVICTION_MEMORY,
            policy: crate::PodPolicy::default(),
            service_proxy: false,
        }
    }

    #[test]
    fn conditions_follow_the_host() {
        let mut facts = HostFacts {
            cpus: 2,
            memory_bytes: 4 << 30,
            memory_available: 3 << 30,
            disk_free: 0.5,
            pids: (100, 32768),
        };
        let st = node_status(&cfg(), &facts);
        let cond = |st: &Value, t: &str| {
            st["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == t)
                .unwrap()["status"]
                .clone()
        };
        assert_eq!(st["capacity"]["cpu"], "2");
        assert_eq!(st["capacity"]["memory"], "4194304Ki");
        assert_eq!(st["capacity"]["pods"], "110");
        assert_eq!(cond(&st, "Ready"), "True");
        assert_eq!(cond(&st, "MemoryPressure"), "False");
        assert_eq!(st["addresses"][0]["address"], "10.0.0.2");
        facts.memory_available = 10 << 20;
        facts.disk_free = 0.01;
        facts.pids = (32000, 32768);
        let st = node_status(&cfg(), &facts);
        for t in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
            assert_eq!(cond(&st, t), "True", "{t}");
        }
    }

    #[test]
    fn meminfo_is_read_in_bytes() {
        let text = "MemTotal:       16384 kB\nMemAvailable:    2048 kB\n";
        assert_eq!(meminfo_field(text, "MemTotal:"), Some(16384 * 1024));
        assert_eq!(meminfo_field(text, "MemAvailable:"), Some(2048 * 1024));
        assert_eq!(meminfo_field(text, "Nope:"), None);
    }

    #[test]
    fn the_node_carries_kubernetes_labels() {
        let facts = host_facts(Path::new("/"));
        let n = node_object(&cfg(), &facts);
        assert_eq!(n["metadata"]["labels"]["kubernetes.io/hostname"], "n1");
        assert_eq!(n["metadata"]["labels"]["kubernetes.io/os"], "linux");
        assert!(facts.cpus >= 1 && facts.memory_bytes > 0);
    }
}
