//! Pods: a sandbox process holding the network, IPC and UTS namespaces, attached to a CNI
//! network, and containers that join those namespaces (so they share one IP and talk over
//! `localhost`). The library API the node agent and `podlet pod` use.
//!
//! State lives in `<state>/pods/<name>.json`, written atomically under a lock; removing a pod
//! undoes the network (CNI `DEL` releases the address), stops the sandbox and drops the file.

pub mod cni;
pub mod sandbox;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use self::cni::CniNetwork;
use self::sandbox::Sandbox;

/// Why a pod operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    /// The sandbox process could not be started or entered.
    #[error("pod sandbox: {what}: {source}")]
    Sandbox {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The network configuration is missing or invalid.
    #[error("pod network: {0}")]
    Network(String),
    /// A CNI plugin failed.
    #[error("CNI plugin {plugin} {command} failed (code {code}): {message}")]
    Plugin {
        /// The plugin type.
        plugin: String,
        /// The CNI command.
        command: String,
        /// The spec's error code.
        code: u64,
        /// Its message and details.
        message: String,
    },
    /// No pod has that name.
    #[error("no such pod: {0}")]
    NotFound(String),
    /// The name is taken.
    #[error("the pod name {0:?} is already in use; remove it with `podlet pod rm {0}` or choose another")]
    Exists(String),
    /// The name is not usable.
    #[error("invalid pod name {0:?}: use letters, digits, '_', '.', '-' (at most 64)")]
    InvalidName(String),
    /// Reading or writing pod state failed.
    #[error("pod state {path}: {source}")]
    State {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// How a pod is networked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "mode")]
pub enum PodNetwork {
    /// Its own network namespace with only loopback.
    None,
    /// The host's (the caller's) network namespace.
    Host,
    /// Its own namespace attached to a CNI network.
    Cni {
        /// The network's name.
        name: String,
        /// Where network configurations are looked up.
        conf_dir: PathBuf,
        /// Where plugins are looked up.
        plugin_dirs: Vec<PathBuf>,
    },
}

/// One pod's recorded state.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodState {
    /// Its name.
    pub name: String,
    /// A unique id (also the CNI container id).
    pub id: String,
    /// When it was created (RFC 3339).
    pub created: String,
    /// The pod's hostname.
    pub hostname: String,
    /// The sandbox process.
    pub sandbox: Sandbox,
    /// How it is networked.
    pub network: PodNetwork,
    /// The CNI `ADD` result (kept for `DEL` and `CHECK`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni_result: Option<Value>,
    /// The pod's IPv4 address, if networked through CNI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Ids of the containers that joined it, in order.
    #[serde(default)]
    pub containers: Vec<String>,
    /// Labels (free-form, e.g. the Kubernetes pod's namespace and uid).
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// The pod-wide process limit: its containers' cgroups then nest in `pods/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<i64>,
}

/// The interface name pods get on CNI networks.
pub const POD_IFNAME: &str = "eth0";

impl PodState {
    /// Whether the sandbox still runs.
    pub fn is_running(&self) -> bool {
        self.sandbox.is_alive()
    }

    /// Makes an OCI config (`serde_json` form) join this pod: its network (unless host), IPC
    /// and UTS namespaces are the sandbox's; the hostname is the pod's.
    pub fn join(&self, spec: &mut Value) {
        let shared = ["network", "ipc", "uts"];
        let mut ns: Vec<Value> = spec["linux"]["namespaces"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|n| !shared.contains(&n["type"].as_str().unwrap_or("")))
            .collect();
        for t in shared {
            let path = match t {
                "network" if self.network == PodNetwork::Host => continue,
                "network" => self.sandbox.ns_path("net"),
                other => self.sandbox.ns_path(other),
            };
            ns.push(json!({"type": t, "path": path}));
        }
        spec["linux"]["namespaces"] = Value::Array(ns);
        spec["hostname"] = json!(self.hostname);
    }
}

/// The pods of one state directory.
#[derive(Debug, Clone)]
pub struct Pods {
    dir: PathBuf,
}

fn state_err(path: &Path) -> impl FnOnce(std::io::Error) -> PodError + '_ {
    move |source| PodError::State {
        path: path.to_path_buf(),
        source,
    }
}

fn random_id() -> String {
    let mut b = [0u8; 16];
    if let Ok(mut f) = File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Brings `lo` up inside the network namespace at `netns` (a thread enters it).
fn loopback_up_in(netns: &Path) -> Result<(), PodError> {
    let f = File::open(netns).map_err(|source| PodError::Sandbox {
        what: format!("open {}", netns.display()),
        source,
    })?;
    std::thread::spawn(move || -> std::io::Result<()> {
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)?;
        crate::process::init::loopback_up()
    })
    .join()
    .map_err(|_| PodError::Sandbox {
        what: "loopback thread".into(),
        source: std::io::Error::other("panicked"),
    })?
    .map_err(|source| PodError::Sandbox {
        what: "bring up loopback".into(),
        source,
    })
}

/// Everything needed to create a pod.
#[derive(Debug, Clone)]
pub struct PodSpec {
    /// Pod name.
    pub name: String,
    /// Hostname (default: the name).
    pub hostname: Option<String>,
    /// Networking.
    pub network: PodNetwork,
    /// Labels to record.
    pub labels: std::collections::BTreeMap<String, String>,
    /// At most this many processes in the whole pod (its own cgroup, `pods/<name>`).
    pub pids_limit: Option<i64>,
}

/// A held lock on the pods directory (released on drop).
type Lock = nix::fcntl::Flock<File>;

impl Pods {
    /// Pods under `<state>/pods`.
    pub fn new(state: &Path) -> Pods {
        Pods {
            dir: state.join("pods"),
        }
    }

    fn lock(&self) -> Result<Lock, PodError> {
        fs::create_dir_all(&self.dir).map_err(state_err(&self.dir))?;
        let p = self.dir.join(".lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(state_err(&p))?;
        nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| {
            PodError::State {
                path: p.clone(),
                source: e.into(),
            }
        })
    }

    /// Fails with [`PodError::Exists`] when `name` has a pod.
    fn check_free(&self, name: &str) -> Result<(), PodError> {
        if self.file(name).exists() {
            return Err(PodError::Exists(name.to_string()));
        }
        Ok(())
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    fn save(&self, st: &PodState) -> Result<(), PodError> {
        let path = self.file(&st.name);
        let tmp = self.dir.join(format!(".{}.tmp", st.name));
        let bytes = serde_json::to_vec_pretty(st).map_err(|e| PodError::State {
            path: path.clone(),
            source: e.into(),
        })?;
        // Runtime state, like a container's state.json (and runc's): written whole and
        // renamed into place, not fsynced — it describes processes that a reboot ends anyway,
        // and an fsync per save serialised pod start-up on the filesystem's journal.
        let mut f = File::create(&tmp).map_err(state_err(&tmp))?;
        f.write_all(&bytes).map_err(state_err(&tmp))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(state_err(&path))
    }

    /// Reads one pod's state.
    pub fn load(&self, name: &str) -> Result<PodState, PodError> {
        crate::state::validate_id(name).map_err(|_| PodError::InvalidName(name.into()))?;
        let path = self.file(name);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(PodError::NotFound(name.into()))
            }
            Err(e) => return Err(state_err(&path)(e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| PodError::State {
            path,
            source: e.into(),
        })
    }

    /// Every pod, by name.
    pub fn list(&self) -> Result<Vec<PodState>, PodError> {
        let mut names: Vec<String> = match fs::read_dir(&self.dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.strip_suffix(".json")
                        .filter(|s| !s.starts_with('.'))
                        .map(str::to_string)
                })
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(state_err(&self.dir)(e)),
        };
        names.sort();
        names.iter().map(|n| self.load(n)).collect()
    }

    /// Creates a pod: starts the sandbox (`sandbox_exe sandbox_args…`, e.g. `podlet pause`),
    /// brings up its loopback and attaches it to its network. On any failure everything made
    /// so far is undone.
    pub fn create(
        &self,
        spec: &PodSpec,
        sandbox_exe: &Path,
        sandbox_args: &[&str],
    ) -> Result<PodState, PodError> {
        crate::state::validate_id(&spec.name)
            .map_err(|_| PodError::InvalidName(spec.name.clone()))?;
        let network = match &spec.network {
            PodNetwork::Cni {
                name,
                conf_dir,
                plugin_dirs,
            } => Some(CniNetwork::load(conf_dir, name, plugin_dirs.clone())?),
            _ => None,
        };
        // The directory lock covers only the checks that the name is free and the final
        // save: sandbox start and CNI ADD run unlocked, so one agent creates many pods at
        // once. Two creators racing for one name both attach; the second to save undoes its
        // sandbox and network and fails (no claim file: nothing is left if a creator dies).
        {
            let _lock = self.lock()?;
            self.check_free(&spec.name)?;
        }
        let hostname = spec.hostname.clone().unwrap_or_else(|| spec.name.clone());
        let own_network = spec.network != PodNetwork::Host;
        let sandbox = Sandbox::spawn(sandbox_exe, sandbox_args, &hostname, own_network)?;
        let mut st = PodState {
            name: spec.name.clone(),
            id: random_id(),
            created: crate::container::now_rfc3339(),
            hostname,
            sandbox,
            network: spec.network.clone(),
            cni_result: None,
            ip: None,
            containers: Vec::new(),
            labels: spec.labels.clone(),
            pids_limit: spec.pids_limit,
        };
        let mut attach = || -> Result<(), PodError> {
            if spec.network != PodNetwork::Host {
                loopback_up_in(&sandbox.ns_path("net"))?;
            }
            if let Some(net) = &network {
                let result = net.add(&st.id, &sandbox.ns_path("net"), POD_IFNAME)?;
                st.ip = cni::result_ip(&result);
                st.cni_result = Some(result);
            }
            let _lock = self.lock()?;
            self.check_free(&st.name)?;
            self.save(&st)
        };
        if let Err(e) = attach() {
            if let (Some(net), Some(r)) = (&network, &st.cni_result) {
                let _ = net.del(&st.id, Some(&sandbox.ns_path("net")), POD_IFNAME, Some(r));
            }
            sandbox.stop();
            return Err(e);
        }
        tracing::info!(pod = %st.name, ip = ?st.ip, "pod created");
        Ok(st)
    }

    /// Records that container `id` joined pod `name`.
    pub fn add_container(&self, name: &str, id: &str) -> Result<PodState, PodError> {
        let _lock = self.lock()?;
        let mut st = self.load(name)?;
        if !st.containers.iter().any(|c| c == id) {
            st.containers.push(id.to_string());
        }
        self.save(&st)?;
        Ok(st)
    }

    /// Forgets container `id` of pod `name`.
    pub fn remove_container(&self, name: &str, id: &str) -> Result<(), PodError> {
        let _lock = self.lock()?;
        let mut st = self.load(name)?;
        st.containers.retain(|c| c != id);
        self.save(&st)
    }

    /// Stops a pod's sandbox after releasing its network (CNI `DEL`). Its containers must have
    /// been stopped first (they share the sandbox's namespaces). Stopping twice is a no-op.
    pub fn stop(&self, name: &str) -> Result<PodState, PodError> {
        let _lock = self.lock()?;
        let mut st = self.load(name)?;
        // The sandbox stops even if the network cannot be released now (`rm` tries again).
        let released = self.release_network(&mut st);
        st.sandbox.stop();
        self.save(&st)?;
        released.map(|()| st)
    }

    fn release_network(&self, st: &mut PodState) -> Result<(), PodError> {
        if let PodNetwork::Cni {
            name,
            conf_dir,
            plugin_dirs,
        } = &st.network
        {
            if let Some(result) = &st.cni_result {
                let net = CniNetwork::load(conf_dir, name, plugin_dirs.clone())?;
                let netns = st.sandbox.is_alive().then(|| st.sandbox.ns_path("net"));
                net.del(&st.id, netns.as_deref(), POD_IFNAME, Some(result))?;
                st.cni_result = None;
            }
        }
        Ok(())
    }

    /// Removes a stopped pod's state (and stops it first if it still runs).
    pub fn remove(&self, name: &str) -> Result<(), PodError> {
        let _lock = self.lock()?;
        let mut st = self.load(name)?;
        if let Err(e) = self.release_network(&mut st) {
            // A missing plugin or config must not make the pod impossible to remove.
            tracing::warn!(pod = %name, error = %e, "releasing the pod's network failed; removing it anyway");
        }
        st.sandbox.stop();
        let path = self.file(name);
        fs::remove_file(&path).map_err(state_err(&path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_with_a_pod_is_taken_and_a_failed_create_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let pods = Pods::new(dir.path());
        let spec = PodSpec {
            name: "web".into(),
            hostname: None,
            network: PodNetwork::Host,
            labels: Default::default(),
            pids_limit: None,
        };
        // A sandbox that cannot start: nothing recorded, the name stays free.
        let err = pods
            .create(&spec, Path::new("/nonexistent/podlet"), &["pause"])
            .unwrap_err();
        assert!(!matches!(err, PodError::Exists(_)), "{err}");
        assert!(pods.list().unwrap().is_empty());
        assert!(pods.check_free("web").is_ok());
        // A recorded pod takes its name.
        fs::create_dir_all(dir.path().join("pods")).unwrap();
        fs::write(pods.file("web"), "{}").unwrap();
        assert!(matches!(pods.check_free("web"), Err(PodError::Exists(n)) if n == "web"));
        assert!(matches!(
            pods.create(&spec, Path::new("/nonexistent/podlet"), &["pause"]),
            Err(PodError::Exists(_))
        ));
    }
}
