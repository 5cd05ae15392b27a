//! The typed description of a container the engine makes: what `podlet run` flags and a
//! Kubernetes container spec both turn into.

use std::path::PathBuf;

use crate::ports::PortMapping;

/// A bind mount from the host into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// The host path (absolute, already resolved by the caller).
    pub source: PathBuf,
    /// The absolute path inside the container.
    pub destination: String,
    /// Mounted read-only.
    pub readonly: bool,
}

/// Resource limits for the container's cgroup.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    /// Memory limit in bytes.
    pub memory_bytes: Option<i64>,
    /// CPU limit in cores (a CFS quota over a 100 ms period).
    pub cpus: Option<f64>,
    /// CPU shares (cgroup v1 scale, 2..262144), e.g. from Kubernetes CPU requests.
    pub cpu_shares: Option<u64>,
    /// Maximum number of processes.
    pub pids: Option<i64>,
}

/// How the container is networked when it does not join a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Network {
    /// Its own network namespace with loopback only.
    #[default]
    None,
    /// The host's network namespace.
    Host,
    /// A pod of its own on this CNI network, made with the container and removed with it.
    Cni(crate::pod::PodNetwork),
}

/// Which seccomp filter a container runs under.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Seccomp {
    /// No filter.
    #[default]
    Unconfined,
    /// The runtime's default profile for the container's capabilities
    /// ([`crate::engine::seccomp_profile::runtime_default`]).
    RuntimeDefault,
    /// An OCI `linux.seccomp` object (e.g. a Kubernetes `Localhost` profile).
    Profile(serde_json::Value),
}

/// Everything the engine needs to create one container.
#[derive(Debug, Clone, Default)]
pub struct ContainerConfig {
    /// The container's name (a random id when `None`).
    pub name: Option<String>,
    /// Image name or id in the store.
    pub image: String,
    /// Replaces the image's entrypoint (`Some(vec![])` clears it).
    pub entrypoint: Option<Vec<String>>,
    /// Command (replaces the image's Cmd when not empty).
    pub command: Vec<String>,
    /// `KEY=VALUE` pairs set over the image's environment, in order.
    pub env: Vec<String>,
    /// Bind mounts.
    pub mounts: Vec<BindMount>,
    /// Working directory (default: the image's, else `/`).
    pub workdir: Option<String>,
    /// `UID[:GID]` or names from the image's `/etc/passwd` and `/etc/group`.
    pub user: Option<String>,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// Hostname (default: the first 12 characters of the name); a pod's when joining one.
    pub hostname: Option<String>,
    /// Network when not joining a pod.
    pub network: Network,
    /// The pod to join (its network, IPC and UTS namespaces).
    pub pod: Option<String>,
    /// Published ports, proxied in userspace.
    pub ports: Vec<PortMapping>,
    /// Cgroup limits.
    pub resources: Resources,
    /// Root filesystem read-only.
    pub read_only: bool,
    /// Capabilities to add to the default set (`ALL` for every one).
    pub cap_add: Vec<String>,
    /// Capabilities to drop from the default set (`ALL` for every one).
    pub cap_drop: Vec<String>,
    /// The seccomp filter.
    pub seccomp: Seccomp,
    /// Kubernetes' `privileged` (with `cap_add: ALL` and no seccomp, set by the caller):
    /// no masked or read-only `/proc` paths, `/sys` and the cgroup tree writable. Host
    /// devices are not added to `/dev`.
    pub privileged: bool,
    /// Set `no_new_privs` for the container's processes.
    pub no_new_privileges: bool,
    /// Give the process a terminal.
    pub tty: bool,
    /// Remove the container when it exits (detached containers: done by the monitor).
    pub remove: bool,
    /// The container's `/etc/resolv.conf`; `None`: the host's (or an empty one without a
    /// network). Kubernetes' `dnsPolicy` decides it for pods.
    pub resolv_conf: Option<String>,
}
