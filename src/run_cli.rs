//! `podlet run`, `podlet ps`, `podlet rm`, …: containers from images, for people.
//!
//! This file only turns flags into the engine's [`ContainerConfig`] and prints results; the
//! container lifecycle (image, snapshot, OCI spec, monitor, pods) is
//! [`podlet_runtime::engine`], shared with the node agent. What stays here is what belongs to
//! a terminal: stdin, a pty, forwarded signals.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use podlet_runtime::engine::{
    BindMount, ContainerConfig, Engine, EngineConfig, ExecRequest, Network, Prepared, Resources,
    Seccomp,
};
use podlet_runtime::pod::PodNetwork;
use podlet_runtime::state::Status;
use serde_json::json;

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
    /// Security options, as podman takes them: `seccomp=unconfined`, `seccomp=FILE` (an OCI
    /// or Docker/podman seccomp profile), `no-new-privileges[=true|false]`. Repeatable.
    /// Without `seccomp=…` the runtime's default profile applies.
    #[arg(long = "security-opt")]
    pub(crate) security_opt: Vec<String>,
    /// Override the image's entrypoint.
    #[arg(long)]
    pub(crate) entrypoint: Option<String>,
    /// Image name or id.
    pub(crate) image: String,
    /// Command and arguments (default: the image's Cmd).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub(crate) command: Vec<String>,
}

/// Where podlet's own containers keep runtime state.
pub const DEFAULT_STATE: &str = "/run/podlet";

/// Twelve random hex digits: container and generated names.
pub(crate) fn random_id() -> String {
    podlet_runtime::engine::random_id()
}

/// The engine over podlet's store, state and cgroup root; monitors and pod sandboxes run as
/// this binary.
pub(crate) fn engine(root: &Path, state: &Path, cgroup_root: Option<&Path>) -> Result<Engine> {
    Ok(Engine::open(EngineConfig {
        root: root.to_path_buf(),
        state: state.to_path_buf(),
        cgroup_root: cgroup_root.map(Path::to_path_buf),
        exe: std::env::current_exe().context("locate the podlet binary")?,
    })?)
}

/// `--env-file` files then `--env` values, as `KEY=VALUE` (a bare `KEY` takes podlet's value).
fn environment(a: &RunArgs) -> Result<Vec<String>> {
    let mut env = Vec::new();
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
            env.push(line.to_string());
        }
    }
    for e in &a.env {
        match e.split_once('=') {
            Some((k, _)) if !k.is_empty() => env.push(e.clone()),
            Some(_) => bail!("--env {e:?}: empty name"),
            None => {
                if let Ok(v) = std::env::var(e) {
                    env.push(format!("{e}={v}"));
                }
            }
        }
    }
    Ok(env)
}

fn parse_volume(v: &str) -> Result<BindMount> {
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
    Ok(BindMount {
        source: src,
        destination: dst.to_string(),
        readonly: ro,
    })
}

/// The seccomp filter and no_new_privs from `--security-opt` values (podman's spelling).
pub(crate) fn security_options(opts: &[String]) -> Result<(Seccomp, bool)> {
    let mut seccomp = Seccomp::RuntimeDefault;
    let mut nnp = false;
    for opt in opts {
        let (key, value) = match opt.split_once(['=', ':']) {
            Some((k, v)) => (k, Some(v)),
            None => (opt.as_str(), None),
        };
        match (key, value) {
            ("seccomp", Some("unconfined")) => seccomp = Seccomp::Unconfined,
            ("seccomp", Some(path)) if !path.is_empty() => {
                let text = std::fs::read(path)
                    .with_context(|| format!("--security-opt {opt:?}: reading {path}"))?;
                let value: serde_json::Value = serde_json::from_slice(&text)
                    .with_context(|| format!("--security-opt {opt:?}: {path} is not JSON"))?;
                seccomp = Seccomp::Profile(value);
            }
            ("no-new-privileges", None | Some("true")) => nnp = true,
            ("no-new-privileges", Some("false")) => nnp = false,
            ("label" | "apparmor" | "mask" | "unmask" | "proc-opts" | "systempaths", _) => {
                bail!("--security-opt {opt:?}: not supported by podlet")
            }
            _ => bail!(
                "--security-opt {opt:?}: expected seccomp=unconfined, seccomp=FILE or no-new-privileges[=true|false]"
            ),
        }
    }
    Ok((seccomp, nnp))
}

/// The engine's container config from `podlet run` flags.
pub(crate) fn container_config(a: &RunArgs) -> Result<ContainerConfig> {
    let network = match a.cni.network(a.network.as_deref().unwrap_or("none"))? {
        PodNetwork::None => Network::None,
        PodNetwork::Host => Network::Host,
        net => Network::Cni(net),
    };
    if let Some(w) = &a.workdir {
        if !w.starts_with('/') {
            bail!("--workdir {w:?}: must be an absolute path");
        }
    }
    if let Some(c) = a.cpus {
        if c <= 0.0 {
            bail!("--cpus {c}: must be positive");
        }
    }
    let (seccomp, no_new_privileges) = security_options(&a.security_opt)?;
    Ok(ContainerConfig {
        name: a.name.clone(),
        image: a.image.clone(),
        entrypoint: a.entrypoint.as_ref().map(|e| {
            if e.is_empty() {
                vec![]
            } else {
                vec![e.clone()]
            }
        }),
        command: a.command.clone(),
        env: environment(a)?,
        mounts: a
            .volumes
            .iter()
            .map(|v| parse_volume(v))
            .collect::<Result<_>>()?,
        workdir: a.workdir.clone(),
        user: a.user.clone(),
        hostname: a.hostname.clone(),
        network: if a.pod.is_some() {
            Network::None
        } else {
            network
        },
        pod: a.pod.clone(),
        ports: a
            .publish
            .iter()
            .map(|p| podlet_runtime::ports::PortMapping::parse(p))
            .collect::<std::result::Result<Vec<_>, _>>()?,
        resources: Resources {
            memory_bytes: a
                .memory
                .as_deref()
                .map(crate::runc_update::parse_bytes)
                .transpose()?,
            cpus: a.cpus,
            cpu_shares: None,
            pids: a.pids_limit,
        },
        read_only: a.read_only,
        cap_add: a.cap_add.clone(),
        cap_drop: a.cap_drop.clone(),
        seccomp,
        no_new_privileges,
        tty: a.tty,
        remove: a.rm,
        ..ContainerConfig::default()
    })
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
    let network = a.network.as_deref().unwrap_or("none");
    if a.pod.is_some() && (a.network.is_some() || a.hostname.is_some()) {
        bail!(
            "--network and --hostname cannot be combined with --pod: the container uses the pod's"
        );
    }
    if !a.publish.is_empty() && network == "host" {
        bail!("--publish has no effect with --network host: the container already uses the host's ports");
    }
    if a.detach && (a.interactive || a.tty) {
        bail!("--detach cannot be combined with --interactive or --tty");
    }
    let config = container_config(a)?;
    let engine = engine(root, state, cgroup_root)?;
    let prepared = engine.prepare(&config)?;
    if a.detach {
        return match engine.start_detached(&prepared) {
            Ok(()) => {
                if !a.quiet {
                    println!("{}", prepared.id);
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                engine.discard(&prepared);
                Err(e.into())
            }
        };
    }
    let result = run_attached(&engine, &prepared, a);
    if a.rm || result.is_err() {
        engine.discard(&prepared);
    }
    result
}

/// Runs a prepared container in the foreground: stdin (with -i), a terminal (with -t),
/// signals forwarded; its exit code.
fn run_attached(engine: &Engine, p: &Prepared, a: &RunArgs) -> Result<ExitCode> {
    if !a.interactive {
        // The container inherits stdin: give it /dev/null unless -i.
        let null = std::fs::File::open("/dev/null")?;
        nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 0)?;
    }
    // With -t the runtime hands the pty master to this socket (queued until accepted).
    let console = if a.tty {
        let path = p.snapshot.dir.join("console.sock");
        Some((std::os::unix::net::UnixListener::bind(&path)?, path))
    } else {
        None
    };
    let created = engine.create(p, console.as_ref().map(|(_, path)| path.clone()))?;
    let session = match &console {
        Some((listener, _)) => Some(crate::tty::Session::accept(listener, a.interactive)?),
        None => None,
    };
    let handle = forward_signals(created.pid, session.as_ref().map(|s| s.master_fd()))?;
    engine.start(&p.id)?;
    let code = engine.wait(created.pid);
    handle.close();
    if let Some(s) = session {
        s.finish();
    }
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

/// `podlet logs`: what the monitor recorded; with `follow`, until the container exits.
pub fn logs(root: &Path, state: &Path, name: &str, follow: bool) -> Result<ExitCode> {
    let engine = engine(root, state, None)?;
    let path = engine.log_path(name)?;
    let mut offset = 0usize;
    loop {
        let done = engine.exit_record(name).is_some();
        if let Ok(data) = std::fs::read(&path) {
            let new = &data[offset.min(data.len())..];
            offset = data.len();
            let mut out = std::io::stdout().lock();
            let mut err = std::io::stderr().lock();
            for line in new.split(|b| *b == b'\n') {
                let Some(entry) = podlet_runtime::engine::logs::parse_line(line) else {
                    continue;
                };
                let w: &mut dyn std::io::Write = if entry.stderr { &mut err } else { &mut out };
                let _ = w.write_all(entry.text);
                if !entry.partial {
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
    let engine = engine(root, state, cgroup_root)?;
    Ok(for_each_name(names, |name| {
        Ok(engine.stop(
            name,
            nix::sys::signal::Signal::SIGTERM,
            std::time::Duration::from_secs(timeout),
        )?)
    }))
}

/// `podlet kill`.
pub fn kill(
    root: &Path,
    state: &Path,
    cgroup_root: Option<&Path>,
    signal: &str,
    name: &str,
) -> Result<ExitCode> {
    let engine = engine(root, state, cgroup_root)?;
    let sig = crate::runc_cli::parse_signal(signal)?;
    engine.kill(name, sig)?;
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
    let engine = engine(root, state, cgroup_root)?;
    let dir = engine.container_dir(&a.name)?;
    for kv in &a.env {
        if !kv.contains('=') {
            bail!("--env {kv:?}: expected KEY=VALUE");
        }
    }
    if !a.interactive {
        let null = std::fs::File::open("/dev/null")?;
        nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 0)?;
    }
    let console = if a.tty {
        let path = dir.join(format!("exec-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        Some((std::os::unix::net::UnixListener::bind(&path)?, path))
    } else {
        None
    };
    let req = ExecRequest {
        args: a.command.clone(),
        env: a.env.clone(),
        workdir: a.workdir.clone(),
        tty: a.tty,
        console_socket: console.as_ref().map(|(_, p)| p.clone()),
        quiet: false,
    };
    let result = (|| -> Result<ExitCode> {
        let pid = engine.exec(&a.name, &req)?;
        let session = match &console {
            Some((listener, _)) => Some(crate::tty::Session::accept(listener, a.interactive)?),
            None => None,
        };
        let handle = forward_signals(pid, session.as_ref().map(|s| s.master_fd()))?;
        let code = engine.wait(pid);
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
    let engine = engine(root, state, cgroup_root)?;
    let mut out = Vec::new();
    for name in names {
        let info = engine.inspect(name)?;
        out.push(json!({
            "Name": info.name,
            "Image": info.image,
            "State": {
                "Status": info.status,
                "Text": info.status_text,
                "Pid": info.pid,
                "ExitCode": info.exit.as_ref().map(|e| e.exit_code),
                "FinishedAt": info.exit.as_ref().map(|e| e.finished_at.clone()),
                "OOMKilled": info.exit.as_ref().is_some_and(|e| e.oom_killed),
            },
            "Config": {
                "Cmd": info.args,
                "Env": info.env,
                "WorkingDir": info.cwd,
                "Hostname": info.hostname,
            },
            "Rootfs": info.rootfs,
            "Pod": info.pod,
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
    let engine = engine(root, state, cgroup_root)?;
    let mut rows = Vec::new();
    for info in engine.list() {
        if !all && info.status != Status::Running && info.status != Status::Paused {
            continue;
        }
        rows.push(
            json!({"name": info.name, "image": info.image, "command": info.args.join(" "),
            "status": info.status, "statusText": info.status_text,
            "exitCode": info.exit.map(|e| e.exit_code)}),
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
    let engine = engine(root, state, cgroup_root)?;
    Ok(for_each_name(names, |name| {
        engine.inspect(name)?;
        Ok(engine.remove(name, force)?)
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
