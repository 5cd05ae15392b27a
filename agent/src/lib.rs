//! podlet's node agent (`podlet agent`): joins a master, registers its Node, renews its Lease,
//! keeps its pod network and the routes to other nodes' pods, and runs the pods bound to it
//! through the container engine (`podlet_runtime::engine`), reporting their status.
//!
//! - [`client`]: joining with the join token and the API client with the node's own token.
//! - [`node`]: the host's facts, the Node object, Lease renewal and node conditions.
//! - [`network`]: the pod network on this node's pod CIDR and host-gw routes to the others.
//! - [`pods`]: pod workers (one per pod, level-triggered) that sync pods to the engine.
//! - [`maglev`]: the consistent-hashing table for userspace Service load balancing.
//! - [`services`]: the Service proxy (`sk_lookup` + Maglev, no NAT rules) and cluster DNS.

pub mod client;
pub mod images;
pub mod maglev;
pub mod network;
pub mod node;
pub mod pods;
pub mod services;

use std::path::PathBuf;

/// Why the agent could not do something.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration or a server answer is invalid; the message names the problem.
    #[error("{0}")]
    Invalid(String),
    /// The API server refused or failed a request.
    #[error("API: {0}")]
    Api(#[from] kube::Error),
    /// The container engine failed.
    #[error(transparent)]
    Engine(#[from] podlet_runtime::engine::EngineError),
    /// A file operation failed.
    #[error("{what} {path}: {source}", path = path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// How pod traffic reaches other nodes (k3s's `--flannel-backend` values).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RouteBackend {
    /// A route per peer pod CIDR via the peer's address (nodes share an L2 segment).
    #[default]
    HostGw,
    /// A VXLAN overlay (nodes only need IP reachability).
    Vxlan,
}

impl std::str::FromStr for RouteBackend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "host-gw" => Ok(RouteBackend::HostGw),
            "vxlan" => Ok(RouteBackend::Vxlan),
            other => Err(format!("{other:?}: expected host-gw or vxlan")),
        }
    }
}

/// How the agent is configured (`podlet agent` flags).
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The master's URL (`https://HOST:6443`).
    pub server: String,
    /// The node join token (`<master data dir>/node-token`).
    pub join_token: String,
    /// The master's CA certificate (PEM).
    pub ca_file: PathBuf,
    /// This node's name (default: the host name).
    pub node_name: String,
    /// This node's address other nodes reach it on (default: the first non-loopback IPv4).
    pub node_ip: std::net::Ipv4Addr,
    /// The agent's own files: its node token, CNI configuration and address leases, volumes.
    pub data_dir: PathBuf,
    /// The engine's image store root.
    pub root: PathBuf,
    /// The engine's runtime state root.
    pub state: PathBuf,
    /// The cgroup root override.
    pub cgroup_root: Option<PathBuf>,
    /// The `podlet` executable (monitors and pod sandboxes run as it).
    pub exe: PathBuf,
    /// Where CNI plugins are looked up (the executable's directory is added last).
    pub cni_plugin_dirs: Vec<PathBuf>,
    /// How pod traffic reaches other nodes.
    pub backend: RouteBackend,
    /// Hard eviction threshold: below this much available memory the node reports
    /// MemoryPressure and evicts pods, lowest QoS class first (kubelet's
    /// `--eviction-hard memory.available<100Mi`).
    pub eviction_memory_available: u64,
    /// kubelet-style policies for the pods this node runs.
    pub policy: PodPolicy,
    /// Run the Service proxy and cluster DNS ([`services`]) on this node.
    pub service_proxy: bool,
}

/// What kubelet's flags of the same names set for every pod of the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPolicy {
    /// Containers without a `seccompProfile` get `RuntimeDefault` (kubelet's
    /// `--seccomp-default`, on by default here); otherwise they run `Unconfined`, Kubernetes'
    /// default.
    pub seccomp_default: bool,
    /// At most this many processes in one pod (kubelet's `--pod-max-pids`); `None`: no limit.
    pub pod_max_pids: Option<i64>,
    /// Image garbage collection starts when the image filesystem is this full (percent)…
    pub image_gc_high_percent: u8,
    /// …and removes unused images, least recently used first, until it is this full.
    pub image_gc_low_percent: u8,
    /// An image stored more recently than this is never collected (kubelet's
    /// `--minimum-image-ttl-duration`, 2 minutes).
    pub image_min_age: std::time::Duration,
}

impl Default for PodPolicy {
    fn default() -> Self {
        PodPolicy {
            seccomp_default: true,
            pod_max_pids: None,
            image_gc_high_percent: 85,
            image_gc_low_percent: 80,
            image_min_age: std::time::Duration::from_secs(120),
        }
    }
}

/// kubelet's default hard eviction threshold for available memory.
pub const DEFAULT_EVICTION_MEMORY: u64 = 100 << 20;

/// Parses a kubelet-style duration: `90s`, `2m`, `1h`, `1h30m`, `0s`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{s:?}: expected a duration like 2m, 90s or 1h30m");
    let mut total = 0u64;
    let mut num = String::new();
    for ch in s.trim().chars() {
        if ch.is_ascii_digit() {
            num.push(ch);
            continue;
        }
        let n: u64 = num.parse().map_err(|_| bad())?;
        num.clear();
        total += n * match ch {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return Err(bad()),
        };
    }
    if !num.is_empty() || s.trim().is_empty() {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs(total))
}

/// Parses `memory.available<QUANTITY` (kubelet's `--eviction-hard` for memory).
pub fn parse_eviction_hard(s: &str) -> Result<u64, String> {
    let q = s.strip_prefix("memory.available<").ok_or_else(|| {
        format!("{s:?}: expected memory.available<QUANTITY, e.g. memory.available<100Mi")
    })?;
    pods::convert::quantity(q)
        .map(|n| n as u64)
        .ok_or_else(|| format!("{s:?}: {q:?} is not a quantity like 100Mi"))
}

/// Runs the agent: joins, registers the Node, keeps its Lease, sets up the pod network on the
/// pod CIDR the master assigns, keeps routes to the other nodes, and runs this node's pods.
/// Returns only on a setup error.
pub async fn run(cfg: AgentConfig) -> Result<(), AgentError> {
    std::fs::create_dir_all(&cfg.data_dir).map_err(|source| AgentError::Io {
        what: "create",
        path: cfg.data_dir.clone(),
        source,
    })?;
    let client = client::connect(&cfg).await?;
    node::register(&client, &cfg).await?;
    tokio::spawn(node::heartbeat(client.clone(), cfg.clone()));
    let cidr = node::wait_pod_cidr(&client, &cfg.node_name).await?;
    let network = network::setup(&cfg, &cidr)?;
    tracing::info!(node = %cfg.node_name, pod_cidr = %cidr, "node registered");
    tokio::spawn(network::sync_routes(
        client.clone(),
        cfg.node_name.clone(),
        network::overlay(&cfg, &cidr)?,
    ));
    let engine = podlet_runtime::engine::Engine::open(podlet_runtime::engine::EngineConfig {
        root: cfg.root.clone(),
        state: cfg.state.clone(),
        cgroup_root: cfg.cgroup_root.clone(),
        exe: cfg.exe.clone(),
    })?;
    let services = if cfg.service_proxy {
        Some(services::start(client.clone(), cfg.node_name.clone()).await?)
    } else {
        None
    };
    let ctx = pods::worker::SyncContext {
        engine: std::sync::Arc::new(engine),
        data_dir: cfg.data_dir.clone(),
        node_ip: cfg.node_ip.to_string(),
        network,
        evictions: Default::default(),
        policy: cfg.policy.clone(),
        pod_images: Default::default(),
        services,
    };
    tokio::spawn(images::run(
        ctx.engine.clone(),
        cfg.policy.clone(),
        ctx.pod_images.clone(),
    ));
    tokio::spawn(pods::eviction::run(
        client.clone(),
        cfg.clone(),
        ctx.evictions.clone(),
    ));
    pods::run(client, ctx, cfg.node_name.clone()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_kubelet() {
        assert_eq!(parse_duration("2m").unwrap().as_secs(), 120);
        assert_eq!(parse_duration("1h30m").unwrap().as_secs(), 5400);
        assert_eq!(parse_duration("0s").unwrap().as_secs(), 0);
        for bad in ["", "5", "2x", "m"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn eviction_thresholds_parse_like_kubelet() {
        assert_eq!(parse_eviction_hard("memory.available<100Mi"), Ok(100 << 20));
        assert_eq!(parse_eviction_hard("memory.available<1Gi"), Ok(1 << 30));
        assert!(parse_eviction_hard("nodefs.available<10%")
            .unwrap_err()
            .contains("memory.available"));
        assert!(parse_eviction_hard("memory.available<lots")
            .unwrap_err()
            .contains("quantity"));
    }
}
