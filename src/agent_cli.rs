//! `podlet agent`: the node agent's flags, turned into a [`podlet_agent::AgentConfig`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;

/// `podlet agent` flags (k3s agent style).
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The master's URL, e.g. https://10.0.0.1:6443.
    #[arg(long)]
    server: String,
    /// The node join token (the master's `<data-dir>/node-token`).
    #[arg(long, conflicts_with = "token_file")]
    token: Option<String>,
    /// A file holding the node join token.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// The master's CA certificate (the master's `<data-dir>/ca.crt`).
    #[arg(long, value_name = "FILE")]
    ca_file: PathBuf,
    /// This node's name (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// The address other nodes reach this one on (default: the first non-loopback IPv4).
    #[arg(long)]
    node_ip: Option<std::net::Ipv4Addr>,
    /// The agent's own files: node token, CNI configuration and leases, pod volumes.
    #[arg(long, default_value = "/var/lib/podlet/agent")]
    data_dir: PathBuf,
    /// Directories of CNI plugins, ':'-separated (podlet's own directory is searched last).
    #[arg(long, value_name = "DIRS", default_value = podlet_runtime::pod::cni::DEFAULT_PLUGIN_DIR)]
    cni_path: String,
    /// How pod traffic reaches other nodes: host-gw (nodes on one L2 segment) or vxlan.
    /// Every node of a cluster must use the same.
    #[arg(long, default_value = "host-gw")]
    flannel_backend: podlet_agent::RouteBackend,
    /// Hard eviction threshold for available memory (kubelet's syntax).
    #[arg(long, default_value = "memory.available<100Mi", value_parser = podlet_agent::parse_eviction_hard)]
    eviction_hard: u64,
    /// Give containers without a seccompProfile the runtime's default profile
    /// (RuntimeDefault); `--seccomp-default=false` runs them Unconfined, kubelet's default.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    seccomp_default: bool,
    /// At most this many processes in one pod (-1: no limit).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true, value_parser = clap::value_parser!(i64).range(-1..))]
    pod_max_pids: i64,
    /// Image garbage collection starts above this disk usage of the image store (percent).
    #[arg(long, default_value_t = 85, value_parser = clap::value_parser!(u8).range(0..=100))]
    image_gc_high_threshold: u8,
    /// …and removes unused images until usage is below this (percent).
    #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u8).range(0..=100))]
    image_gc_low_threshold: u8,
    /// Images stored more recently than this are never collected (e.g. 2m, 90s, 0s).
    #[arg(long, default_value = "2m", value_parser = podlet_agent::parse_duration)]
    minimum_image_ttl_duration: std::time::Duration,
    /// Do not run the Service proxy and cluster DNS on this node (k3s's flag of that name).
    #[arg(long)]
    disable_kube_proxy: bool,
}

fn node_name(given: Option<&str>) -> Result<String> {
    let name = match given {
        Some(n) => n.to_string(),
        None => nix::unistd::gethostname()
            .context("read the host name")?
            .to_string_lossy()
            .to_ascii_lowercase(),
    };
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !ok {
        bail!("node name {name:?}: use lowercase letters, digits, '-' and '.' (give --node-name)");
    }
    Ok(name)
}

/// The node agent `podlet master` runs in-process (k3s style) for its own node.
#[derive(Debug, Clone)]
pub struct EmbeddedAgent {
    /// Node name (default: the host name).
    pub node_name: Option<String>,
    /// Node address (default: the first non-loopback IPv4).
    pub node_ip: Option<std::net::Ipv4Addr>,
    /// Image store root.
    pub root: PathBuf,
    /// Runtime state root.
    pub state: PathBuf,
    /// Cgroup root override.
    pub cgroup_root: Option<PathBuf>,
    /// How pod traffic reaches other nodes.
    pub backend: podlet_agent::RouteBackend,
}

impl EmbeddedAgent {
    /// The agent's configuration for a master serving on `addr` with `data_dir`.
    pub fn config(
        &self,
        addr: std::net::SocketAddr,
        join_token: &str,
        data_dir: &Path,
    ) -> Result<podlet_agent::AgentConfig> {
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            addr.ip().to_string()
        };
        Ok(podlet_agent::AgentConfig {
            server: format!("https://{host}:{}", addr.port()),
            join_token: join_token.to_string(),
            ca_file: data_dir.join("ca.crt"),
            node_name: node_name(self.node_name.as_deref())?,
            node_ip: match self.node_ip {
                Some(ip) => ip,
                None => podlet_agent::node::default_node_ip()
                    .context("no non-loopback IPv4 address found; give --node-ip")?,
            },
            data_dir: data_dir.join("agent"),
            root: self.root.clone(),
            state: self.state.clone(),
            cgroup_root: self.cgroup_root.clone(),
            exe: std::env::current_exe().context("locate the podlet binary")?,
            cni_plugin_dirs: vec![PathBuf::from(podlet_runtime::pod::cni::DEFAULT_PLUGIN_DIR)],
            backend: self.backend,
            eviction_memory_available: podlet_agent::DEFAULT_EVICTION_MEMORY,
            policy: podlet_agent::PodPolicy::default(),
            service_proxy: true,
        })
    }
}

/// Runs `podlet agent` until it is stopped.
pub fn run(
    root: &Path,
    state: &Path,
    cgroup_root: Option<&Path>,
    a: &AgentArgs,
) -> Result<ExitCode> {
    let token = match (&a.token, &a.token_file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("--token-file {}", f.display()))?
            .trim()
            .to_string(),
        (None, None) => bail!("give the node join token with --token or --token-file"),
    };
    if !a.ca_file.is_file() {
        bail!("--ca-file {}: no such file", a.ca_file.display());
    }
    let node_ip = match a.node_ip {
        Some(ip) => ip,
        None => podlet_agent::node::default_node_ip()
            .context("no non-loopback IPv4 address found; give --node-ip")?,
    };
    let cfg = podlet_agent::AgentConfig {
        server: a.server.clone(),
        join_token: token,
        ca_file: a.ca_file.clone(),
        node_name: node_name(a.node_name.as_deref())?,
        node_ip,
        data_dir: a.data_dir.clone(),
        root: root.to_path_buf(),
        state: state.to_path_buf(),
        cgroup_root: cgroup_root.map(Path::to_path_buf),
        exe: std::env::current_exe().context("locate the podlet binary")?,
        cni_plugin_dirs: std::env::split_paths(&a.cni_path)
            .filter(|p| !p.as_os_str().is_empty())
            .collect(),
        backend: a.flannel_backend,
        eviction_memory_available: a.eviction_hard,
        policy: podlet_agent::PodPolicy {
            seccomp_default: a.seccomp_default,
            pod_max_pids: (a.pod_max_pids > 0).then_some(a.pod_max_pids),
            image_gc_high_percent: a.image_gc_high_threshold,
            image_gc_low_percent: a.image_gc_low_threshold,
            image_min_age: a.minimum_image_ttl_duration,
        },
        service_proxy: !a.disable_kube_proxy,
    };
    if a.image_gc_low_threshold > a.image_gc_high_threshold {
        bail!(
            "--image-gc-low-threshold ({}) must not exceed --image-gc-high-threshold ({})",
            a.image_gc_low_threshold,
            a.image_gc_high_threshold
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the async runtime")?;
    eprintln!(
        "podlet agent: node {} ({}) joining {}",
        cfg.node_name, cfg.node_ip, cfg.server
    );
    rt.block_on(podlet_agent::run(cfg))?;
    Ok(ExitCode::SUCCESS)
}
