//! `podlet run`, `podlet ps`, `podlet rm`: containers from images, for people.
//!
//! `run` resolves the image, unpacks its layers once (shared), makes an overlay snapshot for
//! the container, writes an OCI bundle whose process comes from the image config and the
//! flags, and drives the runtime library: create, start, wait. The overlay is mounted by the
//! container's init inside its own mount namespace.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{Capability, Spec};
use podlet_runtime::cgroups::CgroupRoot;
use podlet_runtime::container::{CreateOptions, Runtime};
use podlet_runtime::image::snapshot::Snapshot;
use podlet_runtime::image::ImageStore;
use podlet_runtime::pod::{PodNetwork, PodSpec, PodState, Pods};
use podlet_runtime::state::{StateRoot, Status};
use serde_json::{json, Value};

/// `podlet run` flags (docker/podman's).
#[derive(Debug, Args, Default, Clone)]
pub struct RunArgs {
    /// Remove the container and its snapshot when it exits.
    #[arg(long)]
    pub(crate) rm: bool,
    /// Run in the background under a monitor; print the container's name.
    #[arg(long, short)]
    pub(crate) detach: bool,
    /// Keep stdin attached (otherwise the container reads /dev/null).
    #[arg(long, short)]
    pub(crate) interactive: bool,
    /// Give the container a terminal (with -i: an interactive shell; resizes follow).
    #[arg(long, short)]
    pub(crate) tty: bool,
    /// Container name (default: a random id).
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Set an environment variable (KEY=VALUE, or KEY to pass podlet's value).
    #[arg(long = "env", short = 'e')]
    pub(crate) env: Vec<String>,
    /// Read environment variables from a file (KEY=VALUE lines, # comments).
    #[arg(long)]
    pub(crate) env_file: Vec<PathBuf>,
    /// Publish a container port: [IP:]HOSTPORT:PORT[/udp] (a userspace proxy, no iptables).
    #[arg(long = "publish", short = 'p')]
    pub(crate) publish: Vec<String>,
    /// Bind mount SRC:DST[:ro].
    #[arg(long = "volume", short = 'v')]
    pub(crate) volumes: Vec<String>,
    /// Working directory inside the container.
    #[arg(long = "workdir", short = 'w')]
    pub(crate) workdir: Option<String>,
    /// UID[:GID] or user name from the image's /etc/passwd.
    #[arg(long, short)]
    pub(crate) user: Option<String>,
    /// Hostname inside the container.
    #[arg(long)]
    pub(crate) hostname: Option<String>,
    /// Network: none (own namespace, loopback only), host, bridge (the default CNI network
    /// `podlet`), or the name of a CNI network in --cni-conf-dir.
    #[arg(long)]
    pub(crate) network: Option<String>,
    /// Join an existing pod's network, IPC and UTS namespaces (see `podlet pod create`).
    #[arg(long)]
    pub(crate) pod: Option<String>,
    #[command(flatten)]
    pub(crate) cni: crate::pod_cli::CniArgs,
    /// Do not print the name of a detached container (`podlet pod run` prints the pod's).
    #[arg(skip)]
    pub(crate) quiet: bool,
    /// Memory limit (e.g. 64m).
    #[arg(long, short)]
    pub(crate) memory: Option<String>,
    /// CPU limit in cores (e.g. 0.5).
    #[arg(long)]
    pub(crate) cpus: Option<f64>,
    /// Maximum number of processes.
    #[arg(long)]
    pub(crate) pids_limit: Option<i64>,
    /// Mount the root filesystem read-only.
    #[arg(long)]
    pub(crate) read_only: bool,
    /// Add a capability (e.g. NET_ADMIN, or ALL).
    #[arg(long)]
    pub(crate) cap_add: Vec<String>,
    /// Drop a capability (e.g. CHOWN, or ALL).
    #[arg(long)]
    pub(crate) cap_drop: Vec<String>,
    /// Override the image's entrypoint.
    #[arg(long)]
    pub(crate) entrypoint: Option<String>,
    /// Image name or id.
    pub(crate) image: String,
    /// Command and arguments (default: the image's Cmd).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub(crate) command: Vec<String>,
}

/// Capabilities a docker/podman container gets by default.
const DEFAULT_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Where podlet's own containers keep runtime state.
pub const DEFAULT_STATE: &str = "/run/podlet";

/// Twelve random hex digits: container and generated names.
pub(crate) fn random_id() -> String {
    let mut b = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    b.iter().map(|x| format!("{x:02x}")).collect::<String>()[..12].to_string()
}

/// Looks `name` up in the image's `/etc/passwd` or `/etc/group` (top layer first).
fn lookup_id(layers: &[PathBuf], file: &str, name: &str) -> Option<(u32, Option<u32>)> {
    for layer in layers.iter().rev() {
        let Ok(text) = std::fs::read_to_string(layer.join("etc").join(file)) else {
            continue;
        };
        for line in text.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() >= 3 && f[0] == name {
                let id = f[2].parse().ok()?;
                let gid = f.get(3).and_then(|g| g.parse().ok());
                return Some((id, gid));
            }
        }
        return None;
    }
    None
}

fn resolve_user(spec_user: &str, layers: &[PathBuf]) -> Result<(u32, u32)> {
    let (u, g) = match spec_user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec_user, None),
    };
    let (uid, default_gid) = match u.parse::<u32>() {
        Ok(n) => (n, None),
        Err(_) => match lookup_id(layers, "passwd", u) {
            Some((id, gid)) => (id, gid),
            None => bail!("user {u:?} not found in the image's /etc/passwd"),
        },
    };
    let gid = match g {
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => lookup_id(layers, "group", g)
                .map(|(id, _)| id)
                .with_context(|| format!("group {g:?} not found in the image's /etc/group"))?,
        },
        None => default_gid.unwrap_or(uid),
    };
    Ok((uid, gid))
}

fn parse_cap(name: &str) -> Result<String> {
    let n = name.to_ascii_uppercase();
    let n = n.strip_prefix("CAP_").unwrap_or(&n).to_string();
    n.parse::<Capability>()
        .map_err(|_| anyhow::anyhow!("unknown capability {name:?}"))?;
    Ok(format!("CAP_{n}"))
}

fn capabilities(a: &RunArgs) -> Result<Vec<String>> {
    let all: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
    let mut set: Vec<String> = DEFAULT_CAPS.iter().map(|c| format!("CAP_{c}")).collect();
    for c in &a.cap_drop {
        if c.eq_ignore_ascii_case("all") {
            set.clear();
        } else {
            let c = parse_cap(c)?;
            set.retain(|x| *x != c);
        }
    }
    for c in &a.cap_add {
        if c.eq_ignore_ascii_case("all") {
            set = all.clone();
        } else {
            let c = parse_cap(c)?;
            if !set.contains(&c) {
                set.push(c);
            }
        }
    }
    Ok(set)
}

fn environment(a: &RunArgs, image_env: &[String], hostname: &str) -> Result<Vec<String>> {
    let mut env: Vec<String> = image_env.to_vec();
    let mut set = |kv: String| {
        let key = kv.split('=').next().unwrap_or("").to_string();
        env.retain(|e| e.split('=').next() != Some(key.as_str()));
        env.push(kv);
    };
    for f in &a.env_file {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("--env-file {}", f.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if !line.contains('=') {
                bail!("--env-file {}:{}: expected KEY=VALUE", f.display(), n + 1);
            }
            set(line.to_string());
        }
    }
    for e in &a.env {
        match e.split_once('=') {
            Some((k, _)) if !k.is_empty() => set(e.clone()),
            Some(_) => bail!("--env {e:?}: empty name"),
            None => {
                if let Ok(v) = std::env::var(e) {
                    set(format!("{e}={v}"));
                }
            }
        }
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    if !env.iter().any(|e| e.starts_with("HOSTNAME=")) {
        env.push(format!("HOSTNAME={hostname}"));
    }
    Ok(env)
}

fn parse_volume(v: &str) -> Result<Value> {
    let parts: Vec<&str> = v.split(':').collect();
    let (src, dst, ro) = match parts.as_slice() {
        [s, d] => (*s, *d, false),
        [s, d, "ro"] => (*s, *d, true),
        [s, d, "rw"] => (*s, *d, false),
        _ => bail!("--volume {v:?}: expected SRC:DST[:ro]"),
    };
    let src = std::fs::canonicalize(src).with_context(|| format!("--volume {v:?}: source"))?;
    if !dst.starts_with('/') {
        bail!("--volume {v:?}: the destination must be absolute");
    }
    let mut opts = vec!["rbind", "rprivate"];
    if ro {
        opts.push("ro");
    }
    Ok(json!({"destination": dst, "type": "bind", "source": src, "options": opts}))
}

/// Builds the container's OCI config from the image config and the flags.
fn build_spec(
    a: &RunArgs,
    id: &str,
    cfg: &ImageConfiguration,
    snap: &Snapshot,
    pod: Option<&PodState>,
) -> Result<Value> {
    let ic = cfg.config().clone().unwrap_or_default();
    let entrypoint: Vec<String> = match &a.entrypoint {
        Some(e) if e.is_empty() => vec![],
        Some(e) => vec![e.clone()],
        None => ic.entrypoint().clone().unwrap_or_default(),
    };
    let cmd: Vec<String> = if !a.command.is_empty() {
        a.command.clone()
    } else if a.entrypoint.is_some() {
        vec![]
    } else {
        ic.cmd().clone().unwrap_or_default()
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        bail!(
            "no command: image {} has no Cmd or Entrypoint; give one after the image name",
            a.image
        );
    }
    let (uid, gid) = match a
        .user
        .as_deref()
        .or(ic.user().as_deref())
        .filter(|u| !u.is_empty())
    {
        Some(u) => resolve_user(u, &snap.layers)?,
        None => (0, 0),
    };
    let hostname = match pod {
        Some(p) => p.hostname.clone(),
        None => a
            .hostname
            .clone()
            .unwrap_or_else(|| id.chars().take(12).collect()),
    };
    let network = match pod {
        Some(p) => p.network.clone(),
        None => PodNetwork::None,
    };
    let host_network = a.network.as_deref() == Some("host") || network == PodNetwork::Host;
    let env = environment(a, ic.env().as_deref().unwrap_or_default(), &hostname)?;
    let cwd = a
        .workdir
        .clone()
        .or(ic.working_dir().clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        bail!("--workdir {cwd:?}: must be an absolute path");
    }
    let caps = capabilities(a)?;
    let mut spec = serde_json::to_value(Spec::default())?;
    spec["root"] = json!({"path": snap.rootfs(), "readonly": a.read_only});
    spec["hostname"] = json!(hostname);
    spec["process"] = json!({
        "terminal": a.tty,
        "user": {"uid": uid, "gid": gid},
        "args": args,
        "env": env,
        "cwd": cwd,
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        "noNewPrivileges": false,
    });
    // Per-container /etc/hostname, /etc/hosts and /etc/resolv.conf.
    let etc = snap.dir.join("etc");
    std::fs::create_dir_all(&etc)?;
    std::fs::write(etc.join("hostname"), format!("{hostname}\n"))?;
    std::fs::write(
        etc.join("hosts"),
        format!("127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\t{hostname}\n"),
    )?;
    let resolv = if host_network || matches!(network, PodNetwork::Cni { .. }) {
        std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()
    } else {
        String::new()
    };
    std::fs::write(etc.join("resolv.conf"), resolv)?;
    let mounts = spec["mounts"].as_array_mut().context("default mounts")?;
    for f in ["hostname", "hosts", "resolv.conf"] {
        mounts.push(json!({"destination": format!("/etc/{f}"), "type": "bind",
            "source": etc.join(f), "options": ["bind", "rprivate"]}));
    }
    for v in &a.volumes {
        mounts.push(parse_volume(v)?);
    }
    if let Some(p) = pod {
        p.join(&mut spec);
    }
    let linux = &mut spec["linux"];
    if host_network {
        if let Some(ns) = linux["namespaces"].as_array_mut() {
            ns.retain(|n| n["type"] != "network");
        }
    }
    let mut resources = json!({});
    if let Some(m) = &a.memory {
        resources["memory"] = json!({"limit": crate::runc_update::parse_bytes(m)?});
    }
    if let Some(c) = a.cpus {
        if c <= 0.0 {
            bail!("--cpus {c}: must be positive");
        }
        resources["cpu"] = json!({"quota": (c * 100_000.0) as i64, "period": 100_000});
    }
    if let Some(p) = a.pids_limit {
        resources["pids"] = json!({"limit": p});
    }
    linux["resources"] = resources;
    linux["cgroupsPath"] = json!(format!("containers/{id}"));
    Ok(spec)
}

fn store_and_runtime(
    root: &Path,
    state: &Path,
    cgroup_root: Option<&Path>,
) -> Result<(ImageStore, Runtime)> {
    let store = ImageStore::open(root).context("image store")?;
    let cgroups = CgroupRoot::discover(cgroup_root).context("cgroup root")?;
    Ok((
        store,
        Runtime {
            state: StateRoot::new(state),
            cgroups,
        },
    ))
}

/// Forwards the usual termination signals to the container's init while it runs; with a
/// pty, SIGWINCH resizes it instead.
fn forward_signals(pid: i32, pty: Option<i32>) -> Result<signal_hook::iterator::Handle> {
    use signal_hook::consts::*;
    let mut signals = signal_hook::iterator::Signals::new([
        SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH,
    ])?;
    let handle = signals.handle();
    std::thread::spawn(move || {
        for sig in signals.forever() {
            if sig == SIGWINCH {
                if let Some(m) = pty {
                    crate::tty::copy_size(1, m);
                }
                continue;
            }
            if let Ok(s) = nix::sys::signal::Signal::try_from(sig) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), s);
            }
        }
    });
    Ok(handle)
}

/// `podlet run`.
pub fn run(root: &Path, state: &Path, cgroup_root: Option<&Path>, a: &RunArgs) -> Result<ExitCode> {
    let (store, rt) = store_and_runtime(root, state, cgroup_root)?;
    let image = store.resolve(&a.image)?;
    let id = match &a.name {
        Some(n) => {
            podlet_runtime::state::validate_id(n)?;
            if store.root().join("containers").join(n).exists() {
                bail!("the container name {n:?} is already in use; remove it with `podlet rm {n}` or choose another");
            }
            n.clone()
        }
        None => random_id(),
    };
    let ports = a
        .publish
        .iter()
        .map(|p| podlet_runtime::ports::PortMapping::parse(p))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let network = a.network.as_deref().unwrap_or("none");
    if a.pod.is_some() && (a.network.is_some() || a.hostname.is_some()) {
        bail!(
            "--network and --hostname cannot be combined with --pod: the container uses the pod's"
        );
    }
    if !ports.is_empty() && network == "host" {
        bail!("--publish has no effect with --network host: the container already uses the host's ports");
    }
    if a.detach && (a.interactive || a.tty) {
        bail!("--detach cannot be combined with --interactive or --tty");
    }
    // The pod to join: the named one, or one made for this container alone when it is
    // attached to a CNI network (it holds the network namespace and the address until `rm`).
    let pod_network = a.cni.network(network)?;
    let membership = match &a.pod {
        Some(p) => {
            let st = Pods::new(state).load(p)?;
            if !st.is_running() {
                bail!("pod {p} is not running");
            }
            Some(crate::pod_cli::Membership {
                pod: p.clone(),
                implicit: false,
            })
        }
        None if matches!(pod_network, PodNetwork::Cni { .. }) => Some(crate::pod_cli::Membership {
            pod: id.clone(),
            implicit: true,
        }),
        None => None,
    };
    let cfg = store.config(&image.config)?;
    let layers = store.unpack_layers(&image)?;
    let snap = Snapshot::create(&store, &id, &image.name, layers)?;
    let joined = (|| -> Result<Option<PodState>> {
        let Some(m) = &membership else {
            return Ok(None);
        };
        crate::pod_cli::record_membership(&snap.dir, m)?;
        if m.implicit {
            let hostname = a
                .hostname
                .clone()
                .unwrap_or_else(|| id.chars().take(12).collect());
            let spec = PodSpec {
                name: id.clone(),
                hostname: Some(hostname),
                network: pod_network.clone(),
                labels: [("io.podlet.container".to_string(), id.clone())].into(),
            };
            crate::pod_cli::create_pod(state, &spec)?;
        }
        Ok(Some(Pods::new(state).add_container(&m.pod, &id)?))
    })();
    let pod = match joined {
        Ok(p) => p,
        Err(e) => {
            let _ = crate::pod_cli::leave_pod(state, &snap.dir, &id);
            let _ = snap.remove();
            return Err(e);
        }
    };
    if a.detach {
        let result = start_detached(&snap, &id, a, &cfg, state, cgroup_root, pod.as_ref());
        if result.is_err() {
            let _ = rt.delete(&id, true);
            let _ = crate::pod_cli::leave_pod(state, &snap.dir, &id);
            let _ = snap.remove();
        }
        return result;
    }
    let result = run_in_snapshot(&rt, &snap, &id, a, &cfg, &ports, pod.as_ref());
    if a.rm || result.is_err() {
        let _ = rt.delete(&id, true);
        let _ = crate::pod_cli::leave_pod(state, &snap.dir, &id);
        let _ = snap.remove();
    }
    result
}

fn run_in_snapshot(
    rt: &Runtime,
    snap: &Snapshot,
    id: &str,
    a: &RunArgs,
    cfg: &ImageConfiguration,
    ports: &[podlet_runtime::ports::PortMapping],
    pod: Option<&PodState>,
) -> Result<ExitCode> {
    let spec = build_spec(a, id, cfg, snap, pod)?;
    let bound = podlet_runtime::ports::bind(ports)?;
    std::fs::write(
        snap.dir.join("config.json"),
        serde_json::to_vec_pretty(&spec)?,
    )?;
    if !a.interactive {
        // The container inherits stdin: give it /dev/null unless -i.
        let null = std::fs::File::open("/dev/null")?;
        nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 0)?;
    }
    // With -t the runtime hands the pty master to this socket (queued until accepted).
    let console = if a.tty {
        let path = snap.dir.join("console.sock");
        Some((std::os::unix::net::UnixListener::bind(&path)?, path))
    } else {
        None
    };
    let opts = CreateOptions {
        overlay: Some(snap.overlay_data()),
        console_socket: console.as_ref().map(|(_, p)| p.clone()),
        ..CreateOptions::default()
    };
    let st = rt.create(id, &snap.dir, &opts)?;
    bound.forward(PathBuf::from(format!("/proc/{}/ns/net", st.pid)));
    let session = match &console {
        Some((listener, _)) => Some(crate::tty::Session::accept(listener, a.interactive)?),
        None => None,
    };
    let handle = forward_signals(st.pid, session.as_ref().map(|s| s.master_fd()))?;
    rt.start(id)?;
    let code = rt.wait_child(st.pid);
    handle.close();
    if let Some(s) = session {
        s.finish();
    }
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

/// Starts the container under `podlet monitor` and returns once it runs (or failed to).
fn start_detached(
    snap: &Snapshot,
    id: &str,
    a: &RunArgs,
    cfg: &ImageConfiguration,
    state: &Path,
    cgroup_root: Option<&Path>,
    pod: Option<&PodState>,
) -> Result<ExitCode> {
    let spec = build_spec(a, id, cfg, snap, pod)?;
    std::fs::write(
        snap.dir.join("config.json"),
        serde_json::to_vec_pretty(&spec)?,
    )?;
    let mcfg = crate::monitor::MonitorConfig {
        id: id.to_string(),
        state: state.to_path_buf(),
        cgroup_root: cgroup_root.map(Path::to_path_buf),
        remove: a.rm,
        ports: a.publish.clone(),
    };
    std::fs::write(snap.dir.join("monitor.json"), serde_json::to_vec(&mcfg)?)?;
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let ready_w_raw = std::os::fd::AsRawFd::as_raw_fd(&ready_w);
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.arg("monitor")
        .arg(&snap.dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: setsid and dup2 are async-signal-safe; the child gets its own session and the
    // ready pipe as fd 3 (dup2 clears CLOEXEC on the copy).
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            if libc::dup2(ready_w_raw, crate::monitor::READY_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("start the container monitor")?;
    drop(ready_w);
    let mut msg = String::new();
    std::io::Read::read_to_string(&mut std::fs::File::from(ready_r), &mut msg)?;
    if msg == "ok" {
        // The monitor lives on in its own session and is not waited for.
        drop(child);
        if !a.quiet {
            println!("{id}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let _ = child.wait();
    if msg.is_empty() {
        bail!("the container monitor exited without starting the container");
    }
    bail!("{msg}")
}

fn snapshot_name(snap: &Snapshot) -> String {
    snap.dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A human status like docker's: `Up`, `Created`, `Exited (3)`.
fn status_text(rt: &Runtime, snap: &Snapshot) -> (Status, String) {
    let name = snapshot_name(snap);
    let status = rt.state(&name).map(|s| s.status).unwrap_or(Status::Stopped);
    let text = match (status, crate::monitor::exit_record(&snap.dir)) {
        (Status::Stopped, Some(r)) => format!("Exited ({})", r.exit_code),
        (Status::Stopped, None) => "Exited".to_string(),
        (Status::Running, _) => "Up".to_string(),
        (s, _) => s.to_string(),
    };
    (status, text)
}

fn open_container(store: &ImageStore, name: &str) -> Result<Snapshot> {
    Snapshot::open(store, name).map_err(|_| anyhow::anyhow!("no such container: {name}"))
}

/// `podlet logs`: what the monitor recorded; with `follow`, until the container exits.
pub fn logs(root: &Path, name: &str, follow: bool) -> Result<ExitCode> {
    let store = ImageStore::open(root).context("image store")?;
    let snap = open_container(&store, name)?;
    let path = snap.dir.join("ctr.log");
    if !snap.dir.join("monitor.json").exists() {
        bail!("container {name} was not started detached; its output went to the terminal");
    }
    let mut offset = 0usize;
    loop {
        let done = crate::monitor::exit_record(&snap.dir).is_some();
        if let Ok(data) = std::fs::read(&path) {
            let new = &data[offset.min(data.len())..];
            offset = data.len();
            let mut out = std::io::stdout().lock();
            let mut err = std::io::stderr().lock();
            for line in new.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                // `<time> <stream> <F|P> <text>`
                let mut parts = line.splitn(4, |b| *b == b' ');
                let (_, stream, tag) = (parts.next(), parts.next(), parts.next());
                let text = parts.next().unwrap_or(b"");
                let w: &mut dyn std::io::Write = if stream == Some(&b"stderr"[..]) {
                    &mut err
                } else {
                    &mut out
                };
                let _ = w.write_all(text);
                if tag != Some(&b"P"[..]) {
                    let _ = w.write_all(b"\n");
                }
            }
        }
        if !follow || done {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// `podlet stop`: SIGTERM, then SIGKILL to every process after `timeout` seconds.
pub fn stop(
    root: &Path,
    state: &Path,
    cgroup_root: Option<&Path>,
    timeout: u64,
    names: &[String],
) -> Result<ExitCode> {
    let (store, rt) = store_and_runtime(root, state, cgroup_root)?;
    Ok(for_each_name(names, |name| {
        open_container(&store, name)?;
        stop_one(&rt, name, timeout)
    }))
}

fn stop_one(rt: &Runtime, name: &str, timeout: u64) -> Result<()> {
    if rt.state(name)?.status == Status::Stopped {
        return Ok(());
    }
    let _ = rt.kill(name, nix::sys::signal::Signal::SIGTERM, false);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout);
    while std::time::Instant::now() < deadline {
        if rt.state(name)?.status == Status::Stopped {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = rt.kill(name, nix::sys::signal::Signal::SIGKILL, true);
    while rt.state(name)?.status != Status::Stopped {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(())
}

/// Stops the containers `ids` (a pod's), skipping ones already gone.
pub(crate) fn stop_containers(
    p: crate::pod_cli::Paths<'_>,
    ids: &[String],
    timeout: u64,
) -> Result<()> {
    let (_, rt) = store_and_runtime(p.root, p.state, p.cgroup_root)?;
    for id in ids {
        if rt.state(id).is_ok() {
            stop_one(&rt, id, timeout)?;
        }
    }
    Ok(())
}

/// Removes the containers `ids` (a pod's): runtime state, snapshot, pod membership.
pub(crate) fn remove_containers(p: crate::pod_cli::Paths<'_>, ids: &[String]) -> Result<()> {
    let (store, rt) = store_and_runtime(p.root, p.state, p.cgroup_root)?;
    for id in ids {
        remove_one(&store, &rt, p.state, id, true)?;
    }
    Ok(())
}

fn remove_one(
    store: &ImageStore,
    rt: &Runtime,
    state: &Path,
    name: &str,
    force: bool,
) -> Result<()> {
    let snap = match Snapshot::open(store, name) {
        Ok(s) => s,
        Err(_) if force => {
            let _ = rt.delete(name, true);
            return Ok(());
        }
        Err(_) => bail!("no such container: {name}"),
    };
    match rt.state(name) {
        Ok(st) if st.status != Status::Stopped && !force => {
            bail!(
                "container {name} is {}: stop it first or use --force",
                st.status
            )
        }
        Ok(_) => rt.delete(name, true)?,
        Err(_) => {}
    }
    crate::pod_cli::leave_pod(state, &snap.dir, name)?;
    snap.remove()?;
    Ok(())
}

/// `podlet kill`.
pub fn kill(
    root: &Path,
    state: &Path,
    cgroup_root: Option<&Path>,
    signal: &str,
    name: &str,
) -> Result<ExitCode> {
    let (store, rt) = store_and_runtime(root, state, cgroup_root)?;
    open_container(&store, name)?;
    let sig = crate::runc_cli::parse_signal(signal)?;
    rt.kill(name, sig, false)?;
    println!("{name}");
    Ok(ExitCode::SUCCESS)
}

/// `podlet exec` flags.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Keep stdin attached.
    #[arg(long, short)]
    interactive: bool,
    /// Give the process a terminal.
    #[arg(long, short)]
    tty: bool,
    /// Set an environment variable (KEY=VALUE).
    #[arg(long = "env", short = 'e')]
    env: Vec<String>,
    /// Working directory.
    #[arg(long = "workdir", short = 'w')]
    workdir: Option<String>,
    /// Container name.
    name: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

/// `podlet exec`: a process in a running container, with its environment; its exit code.
pub fn exec(
    root: &Path,
    state: &Path,
    cgroup_root: Option<&Path>,
    a: &ExecArgs,
) -> Result<ExitCode> {
    let (name, env, workdir) = (&a.name, &a.env, a.workdir.as_deref());
    let (store, rt) = store_and_runtime(root, state, cgroup_root)?;
    let snap = open_container(&store, name)?;
    let mut p = rt.base_process(name)?;
    p.set_args(Some(a.command.clone()));
    p.set_terminal(Some(a.tty));
    let mut e = p.env().clone().unwrap_or_default();
    for kv in env {
        let Some((k, _)) = kv.split_once('=') else {
            bail!("--env {kv:?}: expected KEY=VALUE");
        };
        e.retain(|x| x.split_once('=').map(|(xk, _)| xk) != Some(k));
        e.push(kv.clone());
    }
    p.set_env(Some(e));
    if let Some(w) = workdir {
        p.set_cwd(w.into());
    }
    if !a.interactive {
        let null = std::fs::File::open("/dev/null")?;
        nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 0)?;
    }
    let console = if a.tty {
        let path = snap.dir.join(format!("exec-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        Some((std::os::unix::net::UnixListener::bind(&path)?, path))
    } else {
        None
    };
    let opts = podlet_runtime::exec::ExecOptions {
        console_socket: console.as_ref().map(|(_, p)| p.clone()),
        ..Default::default()
    };
    let result = (|| -> Result<ExitCode> {
        let pid = rt.exec(name, p, &opts)?;
        let session = match &console {
            Some((listener, _)) => Some(crate::tty::Session::accept(listener, a.interactive)?),
            None => None,
        };
        let handle = forward_signals(pid, session.as_ref().map(|s| s.master_fd()))?;
        let code = rt.wait_child(pid);
        handle.close();
        if let Some(s) = session {
            s.finish();
        }
        Ok(ExitCode::from(code.clamp(0, 255) as u8))
    })();
    if let Some((_, path)) = &console {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// `podlet inspect`: the containers' configuration, state and exit record as JSON.
pub fn inspect(
    root: &Path,
    state: &Path,
    cgroup_root: Option<&Path>,
    names: &[String],
) -> Result<ExitCode> {
    let (store, rt) = store_and_runtime(root, state, cgroup_root)?;
    let mut out = Vec::new();
    for name in names {
        let snap = open_container(&store, name)?;
        let (status, text) = status_text(&rt, &snap);
        let config: Value = std::fs::read(snap.dir.join("config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        let pid = rt.state(name).map(|s| s.pid).unwrap_or(0);
        let exit = crate::monitor::exit_record(&snap.dir);
        out.push(json!({
            "Name": name,
            "Image": snap.image,
            "State": {
                "Status": status,
                "Text": text,
                "Pid": pid,
                "ExitCode": exit.as_ref().map(|e| e.exit_code),
                "FinishedAt": exit.as_ref().map(|e| e.finished_at.clone()),
            },
            "Config": {
                "Cmd": config["process"]["args"],
                "Env": config["process"]["env"],
                "WorkingDir": config["process"]["cwd"],
                "Hostname": config["hostname"],
            },
            "Rootfs": snap.rootfs(),
        }));
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

/// `podlet ps`.
pub fn ps(
    root: &Path,
    state: &Path,
    cgroup_root: Option<&Path>,
    all: bool,
    format: &str,
) -> Result<ExitCode> {
    let (store, rt) = store_and_runtime(root, state, cgroup_root)?;
    let mut rows = Vec::new();
    for snap in Snapshot::list(&store) {
        let name = snapshot_name(&snap);
        let (status, status_text) = status_text(&rt, &snap);
        if !all && status != Status::Running && status != Status::Paused {
            continue;
        }
        let command = std::fs::read(snap.dir.join("config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v["process"]["args"].as_array().cloned())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        let exit = crate::monitor::exit_record(&snap.dir).map(|r| r.exit_code);
        rows.push(
            json!({"name": name, "image": snap.image, "command": command,
                         "status": status, "statusText": status_text, "exitCode": exit}),
        );
    }
    if format == "json" {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!("{:<16} {:<40} {:<30} STATUS", "NAME", "IMAGE", "COMMAND");
        for r in &rows {
            println!(
                "{:<16} {:<40} {:<30} {}",
                r["name"].as_str().unwrap_or(""),
                r["image"].as_str().unwrap_or(""),
                r["command"].as_str().unwrap_or(""),
                r["statusText"].as_str().unwrap_or("")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `podlet rm`.
pub fn rm(
    root: &Path,
    state: &Path,
    cgroup_root: Option<&Path>,
    force: bool,
    names: &[String],
) -> Result<ExitCode> {
    let (store, rt) = store_and_runtime(root, state, cgroup_root)?;
    Ok(for_each_name(names, |name| {
        open_container(&store, name)?;
        remove_one(&store, &rt, state, name, force)
    }))
}

/// Runs `f` for every name, printing the name on success and the error otherwise (like
/// docker's multi-container commands); exit 1 if any failed.
pub(crate) fn for_each_name(names: &[String], mut f: impl FnMut(&str) -> Result<()>) -> ExitCode {
    let mut failed = false;
    for name in names {
        match f(name) {
            Ok(()) => println!("{name}"),
            Err(e) => {
                eprintln!("podlet: {e:#}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
