//! The container engine: images → OCI spec → overlay snapshot → monitor process → pod
//! membership → stop/kill/remove/exec/logs/inspect, as one typed API that `podlet run`,
//! `podlet pod …` and the node agent share.
//!
//! Containers live in the image store (`<root>/containers/<name>`: snapshot, `config.json`,
//! the monitor's `ctr.log` and `exit.json`) and in the runtime's state root; pods in the state
//! root's `pods/`. The engine keeps no state of its own in memory, so any process (a CLI
//! invocation, a restarted agent) sees the same containers.

pub mod config;
pub mod logs;
pub mod membership;
pub mod monitor;
pub mod seccomp_profile;
pub mod spec;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use oci_spec::image::ImageConfiguration;
use serde::Serialize;

pub use self::config::{BindMount, ContainerConfig, Network, Resources, Seccomp};
use self::membership::Membership;
pub use self::monitor::ExitRecord;
use crate::cgroups::CgroupRoot;
use crate::container::{ContainerError, CreateOptions, Runtime};
use crate::image::snapshot::Snapshot;
use crate::image::{ImageError, ImageStore};
use crate::pod::{PodError, PodNetwork, PodSpec, PodState, Pods};
use crate::ports::PortError;
use crate::state::{StateRoot, Status};

/// Why an engine operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The configuration or a request is invalid; the message names the problem.
    #[error("{0}")]
    Invalid(String),
    /// No container has that name.
    #[error("no such container: {0}")]
    NoSuchContainer(String),
    /// The name is taken.
    #[error("the container name {0:?} is already in use; remove it with `podlet rm {0}` or choose another")]
    NameInUse(String),
    /// The container is in the wrong state for the operation.
    #[error("container {name} is {status}: {hint}")]
    Busy {
        /// The container.
        name: String,
        /// Its status.
        status: Status,
        /// What to do instead.
        hint: &'static str,
    },
    /// An image or snapshot operation failed.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The runtime failed.
    #[error(transparent)]
    Container(#[from] ContainerError),
    /// A pod operation failed.
    #[error(transparent)]
    Pod(#[from] PodError),
    /// A published port is invalid or busy.
    #[error(transparent)]
    Port(#[from] PortError),
    /// The container monitor did not start the container.
    #[error("{0}")]
    Monitor(String),
    /// A file or process operation failed.
    #[error("{what} {path}: {source}", path = path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file involved (may be empty).
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, EngineError>;

/// Where the engine keeps things and which binary runs monitors and pod sandboxes.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The image store root (`/var/lib/podlet`).
    pub root: PathBuf,
    /// The runtime state root (`/run/podlet`).
    pub state: PathBuf,
    /// The cgroup root override (relative to podlet's own cgroup).
    pub cgroup_root: Option<PathBuf>,
    /// The `podlet` executable: `EXE monitor DIR` and `EXE pause` must work.
    pub exe: PathBuf,
}

/// A container made and ready to start: its snapshot and `config.json` exist.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The container's name.
    pub id: String,
    /// Its overlay snapshot.
    pub snapshot: Snapshot,
    /// The pod it joined, if any.
    pub pod: Option<PodState>,
    config: ContainerConfig,
}

/// A container created in the foreground (not under a monitor).
pub struct Created {
    /// Its init's pid (the caller's child).
    pub pid: i32,
}

/// What [`Engine::inspect`] and [`Engine::list`] report.
#[derive(Debug, Clone, Serialize)]
pub struct ContainerInfo {
    /// The container's name.
    pub name: String,
    /// The image it was made from.
    pub image: String,
    /// Its runtime status.
    pub status: Status,
    /// A human status like docker's: `Up`, `Created`, `Exited (3)`.
    pub status_text: String,
    /// Its init's pid (0 when not running).
    pub pid: i32,
    /// How it ended, once it has.
    pub exit: Option<ExitRecord>,
    /// The process arguments.
    pub args: Vec<String>,
    /// The process environment.
    pub env: Vec<String>,
    /// The working directory.
    pub cwd: String,
    /// The hostname.
    pub hostname: String,
    /// Where its root filesystem is mounted.
    pub rootfs: PathBuf,
    /// The pod it belongs to.
    pub pod: Option<String>,
    /// Whether a monitor owns it (started detached).
    pub detached: bool,
}

/// A request to run another process in a container.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    /// Command and arguments.
    pub args: Vec<String>,
    /// `KEY=VALUE` pairs set over the container's environment.
    pub env: Vec<String>,
    /// Working directory (default: the container's).
    pub workdir: Option<String>,
    /// Give the process a terminal (its master goes to `console_socket`).
    pub tty: bool,
    /// Where the pty master is sent.
    pub console_socket: Option<PathBuf>,
    /// Discard the process's output (stdin, stdout and stderr are `/dev/null`).
    pub quiet: bool,
}

/// Twelve random hex digits: container and generated names.
pub fn random_id() -> String {
    let mut b = [0u8; 6];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The container engine.
pub struct Engine {
    config: EngineConfig,
    store: ImageStore,
    runtime: Runtime,
}

impl Engine {
    /// Opens the image store and discovers the cgroup root.
    pub fn open(config: EngineConfig) -> Result<Engine> {
        let store = ImageStore::open(&config.root)?;
        let cgroups =
            CgroupRoot::discover(config.cgroup_root.as_deref()).map_err(ContainerError::from)?;
        let runtime = Runtime {
            state: StateRoot::new(&config.state),
            cgroups,
        };
        Ok(Engine {
            config,
            store,
            runtime,
        })
    }

    /// The image store.
    pub fn store(&self) -> &ImageStore {
        &self.store
    }

    /// The runtime the engine drives.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The engine's configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    fn pods(&self) -> Pods {
        Pods::new(&self.config.state)
    }

    fn open_snapshot(&self, name: &str) -> Result<Snapshot> {
        Snapshot::open(&self.store, name).map_err(|_| EngineError::NoSuchContainer(name.into()))
    }

    /// The image's config, for callers that need its defaults (e.g. STOPSIGNAL).
    pub fn image_config(&self, image: &str) -> Result<ImageConfiguration> {
        let record = self.store.resolve(image)?;
        Ok(self.store.config(&record.config)?)
    }

    /// Makes the container: resolves the image, unpacks its layers (shared), creates the
    /// overlay snapshot, joins (or makes) its pod and writes its OCI config. Nothing is left
    /// behind when it fails.
    pub fn prepare(&self, c: &ContainerConfig) -> Result<Prepared> {
        let image = self.store.resolve(&c.image)?;
        let id = match &c.name {
            Some(n) => {
                crate::state::validate_id(n).map_err(ContainerError::from)?;
                if self.store.root().join("containers").join(n).exists() {
                    return Err(EngineError::NameInUse(n.clone()));
                }
                n.clone()
            }
            None => random_id(),
        };
        if c.pod.is_some() && (c.network != Network::None || c.hostname.is_some()) {
            return Err(EngineError::Invalid(
                "a container joining a pod uses the pod's network and hostname".into(),
            ));
        }
        let membership = match (&c.pod, &c.network) {
            (Some(p), _) => {
                let st = self.pods().load(p)?;
                if !st.is_running() {
                    return Err(EngineError::Invalid(format!("pod {p} is not running")));
                }
                Some(Membership {
                    pod: p.clone(),
                    implicit: false,
                })
            }
            (None, Network::Cni(_)) => Some(Membership {
                pod: id.clone(),
                implicit: true,
            }),
            _ => None,
        };
        let cfg = self.store.config(&image.config)?;
        let layers = self.store.unpack_layers(&image)?;
        let snap = Snapshot::create(&self.store, &id, &image.name, layers)?;
        let made = (|| -> Result<Option<PodState>> {
            let Some(m) = &membership else {
                return Ok(None);
            };
            membership::record(&snap.dir, m)?;
            if let (true, Network::Cni(net)) = (m.implicit, &c.network) {
                let hostname = c
                    .hostname
                    .clone()
                    .unwrap_or_else(|| id.chars().take(12).collect());
                self.create_pod(&PodSpec {
                    name: id.clone(),
                    hostname: Some(hostname),
                    network: net.clone(),
                    labels: [("io.podlet.container".to_string(), id.clone())].into(),
                    pids_limit: None,
                })?;
            }
            Ok(Some(self.pods().add_container(&m.pod, &id)?))
        })();
        let pod = match made {
            Ok(p) => p,
            Err(e) => {
                let _ = membership::leave(&self.config.state, &snap.dir, &id);
                let _ = snap.remove();
                return Err(e);
            }
        };
        let prepared = Prepared {
            id,
            snapshot: snap,
            pod,
            config: c.clone(),
        };
        let written = (|| -> Result<()> {
            let spec = spec::build(
                c,
                &prepared.id,
                &cfg,
                &prepared.snapshot,
                prepared.pod.as_ref(),
            )?;
            let path = prepared.snapshot.dir.join("config.json");
            let data = serde_json::to_vec_pretty(&spec)
                .map_err(|e| EngineError::Invalid(e.to_string()))?;
            std::fs::write(&path, data).map_err(|source| EngineError::Io {
                what: "write",
                path,
                source,
            })
        })();
        if let Err(e) = written {
            self.discard(&prepared);
            return Err(e);
        }
        Ok(prepared)
    }

    /// Removes everything [`Engine::prepare`] made (and runtime state, if created).
    pub fn discard(&self, p: &Prepared) {
        let _ = self.runtime.delete(&p.id, true);
        let _ = membership::leave(&self.config.state, &p.snapshot.dir, &p.id);
        let _ = p.snapshot.remove();
    }

    /// Creates the container as the caller's child (foreground run): published ports are
    /// bound first (a busy port fails here) and proxied into its network namespace.
    pub fn create(&self, p: &Prepared, console_socket: Option<PathBuf>) -> Result<Created> {
        let bound = crate::ports::bind(&p.config.ports)?;
        let opts = CreateOptions {
            overlay: Some(p.snapshot.overlay_data()),
            console_socket,
            ..CreateOptions::default()
        };
        let st = self.runtime.create(&p.id, &p.snapshot.dir, &opts)?;
        bound.forward(PathBuf::from(format!("/proc/{}/ns/net", st.pid)));
        Ok(Created { pid: st.pid })
    }

    /// Starts a created container's process.
    pub fn start(&self, id: &str) -> Result<()> {
        self.runtime.start(id)?;
        Ok(())
    }

    /// Waits for a child process of the caller (a foreground container or exec); its exit
    /// code (128+N for signal N).
    pub fn wait(&self, pid: i32) -> i32 {
        self.runtime.wait_child(pid)
    }

    /// Starts the container under its own monitor process (`EXE monitor DIR`, own session) and
    /// returns once it runs, or with the monitor's reason when it could not start it.
    pub fn start_detached(&self, p: &Prepared) -> Result<()> {
        let mcfg = monitor::MonitorConfig {
            id: p.id.clone(),
            state: self.config.state.clone(),
            cgroup_root: self.config.cgroup_root.clone(),
            remove: p.config.remove,
            ports: p.config.ports.iter().map(|m| m.spec.clone()).collect(),
        };
        let path = p.snapshot.dir.join(monitor::CONFIG_FILE);
        let data = serde_json::to_vec(&mcfg).map_err(|e| EngineError::Invalid(e.to_string()))?;
        std::fs::write(&path, data).map_err(|source| EngineError::Io {
            what: "write",
            path: path.clone(),
            source,
        })?;
        let io = |what: &'static str| {
            let exe = self.config.exe.clone();
            move |source: std::io::Error| EngineError::Io {
                what,
                path: exe,
                source,
            }
        };
        let (ready_r, ready_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| io("pipe")(e.into()))?;
        let ready_w_raw = std::os::fd::AsRawFd::as_raw_fd(&ready_w);
        let mut cmd = std::process::Command::new(&self.config.exe);
        cmd.arg("monitor")
            .arg(&p.snapshot.dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        // SAFETY: setsid and dup2 are async-signal-safe; the child gets its own session and
        // the ready pipe as fd 3 (dup2 clears CLOEXEC on the copy).
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                if libc::dup2(ready_w_raw, monitor::READY_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(io("start the container monitor"))?;
        drop(ready_w);
        let mut msg = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(ready_r), &mut msg)
            .map_err(io("read the monitor's report"))?;
        if msg == "ok" {
            // The monitor lives on in its own session; reap it from a thread so that a
            // long-lived caller (the agent) collects no zombies.
            std::thread::spawn(move || child.wait());
            return Ok(());
        }
        let _ = child.wait();
        if msg.is_empty() {
            return Err(EngineError::Monitor(
                "the container monitor exited without starting the container".into(),
            ));
        }
        Err(EngineError::Monitor(msg))
    }

    /// The container's runtime status (`Stopped` when it has no runtime state).
    pub fn status(&self, name: &str) -> Status {
        self.runtime
            .state(name)
            .map(|s| s.status)
            .unwrap_or(Status::Stopped)
    }

    /// SIGTERM (or `signal`), then SIGKILL to every process after `timeout`; returns once the
    /// container has stopped.
    pub fn stop(&self, name: &str, signal: Signal, timeout: Duration) -> Result<()> {
        self.open_snapshot(name)?;
        self.stop_process(name, signal, timeout)
    }

    fn stop_process(&self, name: &str, signal: Signal, timeout: Duration) -> Result<()> {
        if self.status(name) == Status::Stopped {
            return Ok(());
        }
        let _ = self.runtime.kill(name, signal, false);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.runtime.state(name)?.status == Status::Stopped {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.runtime.kill(name, Signal::SIGKILL, true);
        while self.runtime.state(name)?.status != Status::Stopped {
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Sends `signal` to the container's init.
    pub fn kill(&self, name: &str, signal: Signal) -> Result<()> {
        self.open_snapshot(name)?;
        self.runtime.kill(name, signal, false)?;
        Ok(())
    }

    /// Removes a container: runtime state, snapshot, pod membership. A running one only with
    /// `force` (it is killed).
    pub fn remove(&self, name: &str, force: bool) -> Result<()> {
        let snap = match Snapshot::open(&self.store, name) {
            Ok(s) => s,
            Err(_) if force => {
                let _ = self.runtime.delete(name, true);
                return Ok(());
            }
            Err(_) => return Err(EngineError::NoSuchContainer(name.into())),
        };
        match self.runtime.state(name) {
            Ok(st) if st.status != Status::Stopped && !force => {
                return Err(EngineError::Busy {
                    name: name.into(),
                    status: st.status,
                    hint: "stop it first or use --force",
                })
            }
            Ok(_) => self.runtime.delete(name, true)?,
            Err(_) => {}
        }
        membership::leave(&self.config.state, &snap.dir, name)?;
        snap.remove()?;
        Ok(())
    }

    /// Starts another process in a running container (the caller's child); its pid.
    pub fn exec(&self, name: &str, req: &ExecRequest) -> Result<i32> {
        self.open_snapshot(name)?;
        let mut p = self.runtime.base_process(name)?;
        p.set_args(Some(req.args.clone()));
        p.set_terminal(Some(req.tty));
        let mut env = p.env().clone().unwrap_or_default();
        for kv in &req.env {
            let Some((k, _)) = kv.split_once('=') else {
                return Err(EngineError::Invalid(format!(
                    "env {kv:?}: expected KEY=VALUE"
                )));
            };
            env.retain(|x| x.split_once('=').map(|(xk, _)| xk) != Some(k));
            env.push(kv.clone());
        }
        p.set_env(Some(env));
        if let Some(w) = &req.workdir {
            p.set_cwd(w.into());
        }
        let opts = crate::exec::ExecOptions {
            console_socket: req.console_socket.clone(),
            null_stdio: req.quiet,
            ..Default::default()
        };
        Ok(self.runtime.exec(name, p, &opts)?)
    }

    /// The container's snapshot directory (where exec console sockets may be made).
    pub fn container_dir(&self, name: &str) -> Result<PathBuf> {
        Ok(self.open_snapshot(name)?.dir)
    }

    /// The container's log (CRI format), written by its monitor.
    pub fn log_path(&self, name: &str) -> Result<PathBuf> {
        let snap = self.open_snapshot(name)?;
        if !snap.dir.join(monitor::CONFIG_FILE).exists() {
            return Err(EngineError::Invalid(format!(
                "container {name} was not started detached; its output went to the terminal"
            )));
        }
        Ok(snap.dir.join(monitor::LOG_FILE))
    }

    /// How the container ended, once it has.
    pub fn exit_record(&self, name: &str) -> Option<ExitRecord> {
        monitor::exit_record(&self.open_snapshot(name).ok()?.dir)
    }

    fn info(&self, snap: &Snapshot) -> ContainerInfo {
        let name = snap
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let state = self.runtime.state(&name).ok();
        let status = state.as_ref().map(|s| s.status).unwrap_or(Status::Stopped);
        let exit = monitor::exit_record(&snap.dir);
        let status_text = match (status, &exit) {
            (Status::Stopped, Some(r)) => format!("Exited ({})", r.exit_code),
            (Status::Stopped, None) => "Exited".to_string(),
            (Status::Running, _) => "Up".to_string(),
            (s, _) => s.to_string(),
        };
        let config: serde_json::Value = std::fs::read(snap.dir.join("config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let strings = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        ContainerInfo {
            image: snap.image.clone(),
            status,
            status_text,
            pid: match status {
                Status::Stopped => 0,
                _ => state.map(|s| s.pid).unwrap_or(0),
            },
            exit,
            args: strings(&config["process"]["args"]),
            env: strings(&config["process"]["env"]),
            cwd: config["process"]["cwd"].as_str().unwrap_or("/").to_string(),
            hostname: config["hostname"].as_str().unwrap_or("").to_string(),
            rootfs: snap.rootfs(),
            pod: membership::of(&snap.dir).map(|m| m.pod),
            detached: snap.dir.join(monitor::CONFIG_FILE).exists(),
            name,
        }
    }

    /// One container's configuration, state and exit record.
    pub fn inspect(&self, name: &str) -> Result<ContainerInfo> {
        Ok(self.info(&self.open_snapshot(name)?))
    }

    /// Every container in the store.
    pub fn list(&self) -> Vec<ContainerInfo> {
        Snapshot::list(&self.store)
            .iter()
            .map(|s| self.info(s))
            .collect()
    }

    /// Creates a pod whose sandbox is `EXE pause`. With a pod-wide pids limit the pod gets
    /// its own cgroup `pods/<name>` holding the limit, the sandbox in `pods/<name>/sandbox`
    /// and each container in `pods/<name>/<id>` (kubelet's pod-level cgroup).
    pub fn create_pod(&self, spec: &PodSpec) -> Result<PodState> {
        let st = self.pods().create(spec, &self.config.exe, &["pause"])?;
        if let Some(limit) = spec.pids_limit {
            let made = (|| -> std::result::Result<(), crate::cgroups::CgroupError> {
                let res = pids_resources(limit);
                crate::cgroups::ContainerCgroups::create(
                    &self.runtime.cgroups,
                    &pod_cgroup(&st.name),
                    Some(&res),
                )?;
                let sandbox = crate::cgroups::ContainerCgroups::create(
                    &self.runtime.cgroups,
                    &format!("{}/sandbox", pod_cgroup(&st.name)),
                    Some(&res),
                )?;
                sandbox.add_process(st.sandbox.pid)
            })();
            if let Err(e) = made {
                let _ = self.pods().remove(&st.name);
                self.remove_pod_cgroups(&st.name);
                return Err(ContainerError::from(e).into());
            }
        }
        Ok(st)
    }

    /// Removes a pod's own cgroups (sandbox first, then the pod's), wherever they exist.
    fn remove_pod_cgroups(&self, name: &str) {
        for rel in [format!("{}/sandbox", pod_cgroup(name)), pod_cgroup(name)] {
            for h in &self.runtime.cgroups.hierarchies {
                if let Ok(dir) = h.container_dir(&rel) {
                    // The sandbox may take a moment to exit after SIGKILL.
                    for _ in 0..50 {
                        if !dir.exists() || h.remove_dir(&dir).is_ok() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
        }
    }

    /// A pod's recorded state.
    pub fn pod(&self, name: &str) -> Result<PodState> {
        Ok(self.pods().load(name)?)
    }

    /// Every pod.
    pub fn list_pods(&self) -> Result<Vec<PodState>> {
        Ok(self.pods().list()?)
    }

    /// Stops a pod's containers (SIGTERM, SIGKILL after `timeout`), then its network and
    /// sandbox.
    pub fn stop_pod(&self, name: &str, timeout: Duration) -> Result<()> {
        let st = self.pods().load(name)?;
        for id in &st.containers {
            if self.runtime.state(id).is_ok() {
                self.stop_process(id, Signal::SIGTERM, timeout)?;
            }
        }
        self.pods().stop(name)?;
        Ok(())
    }

    /// Removes a pod and its containers; a running one only with `force`.
    pub fn remove_pod(&self, name: &str, force: bool) -> Result<()> {
        let st = self.pods().load(name)?;
        if st.is_running() && !force {
            return Err(EngineError::Invalid(format!(
                "pod {name} is running: stop it first or use --force"
            )));
        }
        self.stop_pod(name, Duration::ZERO)?;
        for id in &st.containers {
            self.remove(id, true)?;
        }
        self.pods().remove(name)?;
        if st.pids_limit.is_some() {
            self.remove_pod_cgroups(name);
        }
        Ok(())
    }
}

/// The cgroup (below podlet's root) of a pod with pod-wide limits.
pub fn pod_cgroup(name: &str) -> String {
    format!("pods/{name}")
}

fn pids_resources(limit: i64) -> oci_spec::runtime::LinuxResources {
    let mut res = oci_spec::runtime::LinuxResources::default();
    let pids = oci_spec::runtime::LinuxPidsBuilder::default()
        .limit(limit)
        .build()
        .unwrap_or_default();
    res.set_pids(Some(pids));
    res
}

/// A pod network for a `--network` style value: `none`, `host`, `bridge` (the built-in
/// `podlet` CNI network) or a CNI network name.
pub fn pod_network(value: &str, conf_dir: &Path, plugin_dirs: Vec<PathBuf>) -> Result<PodNetwork> {
    Ok(match value {
        "none" => PodNetwork::None,
        "host" => PodNetwork::Host,
        name => {
            let name = if name == "bridge" {
                crate::pod::cni::DEFAULT_NETWORK
            } else {
                name
            };
            if name.is_empty() || name.contains('/') {
                return Err(EngineError::Invalid(format!(
                    "--network {value:?}: expected none, host, bridge or a CNI network name"
                )));
            }
            PodNetwork::Cni {
                name: name.to_string(),
                conf_dir: conf_dir.to_path_buf(),
                plugin_dirs,
            }
        }
    })
}
