//! `podlet-runc`: the runc-compatible command line (the `podlet` binary invoked by that name).

use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use nix::sys::signal::Signal;
use podlet_runtime::cgroups::CgroupRoot;
use podlet_runtime::container::{runc_state_json, CreateOptions, Runtime};
use podlet_runtime::exec::ExecOptions;

use crate::runc_update::UpdateArgs;
use podlet_runtime::state::{StateRoot, DEFAULT_ROOT};

/// A runc-compatible OCI runtime.
#[derive(Debug, Parser)]
#[command(
    name = "podlet-runc",
    version,
    about = "podlet's runc-compatible OCI runtime"
)]
struct Cli {
    /// Directory for container state.
    #[arg(long, global = true, default_value = DEFAULT_ROOT)]
    root: PathBuf,
    /// Write logs to this file instead of stderr.
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Debug logging.
    #[arg(long, global = true)]
    debug: bool,
    /// Use systemd to manage cgroups (not supported by podlet).
    #[arg(long, global = true)]
    systemd_cgroup: bool,
    /// podlet's cgroup root, relative to the cgroup the runtime was started in.
    #[arg(long, global = true)]
    cgroup_root: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// Flags shared by `create` and `run`.
#[derive(Debug, Args)]
struct CreateArgs {
    /// Path to the bundle.
    #[arg(long, short, default_value = ".")]
    bundle: PathBuf,
    /// Write the init's pid here.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Unix socket to send the pty master to (terminal containers).
    #[arg(long)]
    console_socket: Option<PathBuf>,
    /// Pass N extra fds (from 3) into the container.
    #[arg(long, default_value_t = 0)]
    preserve_fds: i32,
    /// Use MS_MOVE and chroot instead of pivot_root.
    #[arg(long)]
    no_pivot: bool,
    /// Do not create a new session keyring (podlet never creates one).
    #[arg(long)]
    no_new_keyring: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a container from a bundle; it waits for `start`.
    Create {
        #[command(flatten)]
        opts: CreateArgs,
        /// Container id.
        id: String,
    },
    /// Create and start a container, and wait for it unless --detach.
    Run {
        #[command(flatten)]
        opts: CreateArgs,
        /// Return once started.
        #[arg(long, short)]
        detach: bool,
        /// Keep the container's state after it exits.
        #[arg(long)]
        keep: bool,
        /// Container id.
        id: String,
    },
    /// Start a created container.
    Start {
        /// Container id.
        id: String,
    },
    /// Print a container's state as JSON.
    State {
        /// Container id.
        id: String,
    },
    /// Send a signal (default SIGTERM) to a container.
    Kill {
        /// Signal every process in the container.
        #[arg(long, short)]
        all: bool,
        /// Container id.
        id: String,
        /// Signal name or number.
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Delete a container's resources.
    Delete {
        /// Kill a running container first.
        #[arg(long, short)]
        force: bool,
        /// Container id.
        id: String,
    },
    /// List containers.
    List {
        /// table or json.
        #[arg(long, short, default_value = "table", value_parser = ["table", "json"])]
        format: String,
        /// Print only ids.
        #[arg(long, short)]
        quiet: bool,
    },
    /// List a container's processes.
    Ps {
        /// table or json.
        #[arg(long, short, default_value = "table", value_parser = ["table", "json"])]
        format: String,
        /// Container id.
        id: String,
    },
    /// Freeze a container's processes.
    Pause {
        /// Container id.
        id: String,
    },
    /// Thaw a paused container.
    Resume {
        /// Container id.
        id: String,
    },
    /// Write a starter config.json to the bundle.
    Spec {
        /// Bundle directory.
        #[arg(long, short, default_value = ".")]
        bundle: PathBuf,
        /// A rootless spec (user namespace mapping the caller).
        #[arg(long)]
        rootless: bool,
    },
    /// Print what this runtime supports, as JSON.
    Features,
    /// Run a new process inside a created or running container.
    Exec(ExecArgs),
    /// Print resource usage and OOM events as JSON lines.
    Events {
        /// Print one stats event and exit.
        #[arg(long)]
        stats: bool,
        /// How often to print stats when streaming.
        #[arg(long, default_value = "5s")]
        interval: String,
        /// Container id.
        id: String,
    },
    /// Change a container's resource limits.
    Update {
        #[command(flatten)]
        args: UpdateArgs,
        /// Container id.
        id: String,
    },
}

/// `exec` flags (runc's).
#[derive(Debug, Args)]
struct ExecArgs {
    /// A JSON file with the process (OCI `process`) to run instead of COMMAND.
    #[arg(long, short)]
    process: Option<PathBuf>,
    /// Write the new process's pid here.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Return once the process has started.
    #[arg(long, short)]
    detach: bool,
    /// Allocate a pseudo-terminal (sent to --console-socket).
    #[arg(long, short)]
    tty: bool,
    /// Unix socket to send the pty master to.
    #[arg(long)]
    console_socket: Option<PathBuf>,
    /// Working directory inside the container.
    #[arg(long)]
    cwd: Option<PathBuf>,
    /// Set an environment variable (KEY=VALUE), repeatable.
    #[arg(long, short)]
    env: Vec<String>,
    /// UID[:GID] to run as.
    #[arg(long, short)]
    user: Option<String>,
    /// Additional group ids, repeatable.
    #[arg(long = "additional-gids", short = 'g')]
    additional_gids: Vec<u32>,
    /// Add a capability (e.g. CAP_NET_ADMIN), repeatable.
    #[arg(long, short)]
    cap: Vec<String>,
    /// Set no_new_privs for the process.
    #[arg(long)]
    no_new_privs: bool,
    /// Pass N extra fds (from 3) into the process.
    #[arg(long, default_value_t = 0)]
    preserve_fds: i32,
    /// Run the process in an existing sub-cgroup of the container's: [CONTROLLER:]PATH,
    /// repeatable (PATH relative, no `..`).
    #[arg(long = "cgroup")]
    cgroup: Vec<String>,
    /// Allow exec into a paused container (the process runs once it is resumed).
    #[arg(long)]
    ignore_paused: bool,
    /// Container id.
    id: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Parses `TERM`, `SIGTERM` or `15`.
pub fn parse_signal(s: &str) -> Result<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| anyhow!("unknown signal {s:?}"));
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name).map_err(|_| anyhow!("unknown signal {s:?}"))
}

fn runtime(cli: &Cli) -> Result<Runtime> {
    if cli.systemd_cgroup {
        bail!("--systemd-cgroup is not supported: podlet manages cgroupfs below its own cgroup");
    }
    let cgroups = CgroupRoot::discover(cli.cgroup_root.as_deref()).context("cgroup root")?;
    Ok(Runtime {
        state: StateRoot::new(&cli.root),
        cgroups,
    })
}

fn features() -> serde_json::Value {
    use podlet_runtime::process::sched;
    let mut mount_options: Vec<&str> = vec![
        "idmap",
        "ridmap",
        "async",
        "atime",
        "bind",
        "defaults",
        "dev",
        "diratime",
        "dirsync",
        "exec",
        "mand",
        "noatime",
        "nodev",
        "nodiratime",
        "noexec",
        "nomand",
        "norelatime",
        "nostrictatime",
        "nosuid",
        "nosymfollow",
        "private",
        "rbind",
        "relatime",
        "remount",
        "ro",
        "rprivate",
        "rshared",
        "rslave",
        "runbindable",
        "rw",
        "shared",
        "slave",
        "strictatime",
        "suid",
        "symfollow",
        "sync",
        "unbindable",
    ];
    mount_options.extend(podlet_runtime::mount_options::recursive_options());
    mount_options.sort_unstable();
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.3.0",
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountExtensions": { "idmap": { "enabled": true } },
        "mountOptions": mount_options,
        // podlet reads no annotation as configuration, so none is potentially unsafe.
        "potentiallyUnsafeConfigAnnotations": [],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": caps::all().iter().map(|c| c.to_string()).collect::<Vec<_>>(),
            "cgroup": { "v1": true, "v2": true, "systemd": false, "systemdUser": false },
            "seccomp": {
                "enabled": true,
                "actions": podlet_runtime::seccomp::ACTIONS,
                "operators": podlet_runtime::seccomp::OPERATORS,
                "archs": podlet_runtime::seccomp::ARCHES,
                "supportedFlags": podlet_runtime::seccomp::FLAGS,
                "knownFlags": podlet_runtime::seccomp::FLAGS
            },
            "apparmor": { "enabled": false },
            "selinux": { "enabled": false },
            "memoryPolicy": {
                "modes": sched::MEMORY_POLICY_MODES,
                "flags": sched::MEMORY_POLICY_FLAGS
            },
            // Not (yet) a field of the spec's features document: what process.scheduler takes.
            "scheduler": {
                "policies": sched::POLICIES,
                "flags": sched::scheduler_flag_names()
            },
            "personality": { "domains": ["LINUX", "LINUX32"] }
        },
        "annotations": { "org.opencontainers.runtime-spec.features.runtime": "podlet" }
    })
}

fn create_opts(a: &CreateArgs) -> Result<CreateOptions> {
    Ok(CreateOptions {
        pid_file: a.pid_file.clone(),
        no_pivot: a.no_pivot,
        preserve_fds: a.preserve_fds,
        console_socket: a.console_socket.clone(),
        overlay: None,
    })
}

/// The process `exec` runs: `--process`, or the container's own process with COMMAND, then
/// the individual flags on top.
fn exec_process(rt: &Runtime, a: &ExecArgs) -> Result<oci_spec::runtime::Process> {
    let mut p = match &a.process {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--process {}", path.display()))?;
            serde_json::from_str::<oci_spec::runtime::Process>(&text)
                .with_context(|| format!("--process {}: not a valid OCI process", path.display()))?
        }
        None => {
            if a.command.is_empty() {
                bail!("exec: give a COMMAND or --process");
            }
            let mut p = rt.base_process(&a.id)?;
            p.set_args(Some(a.command.clone()));
            p.set_terminal(Some(false));
            p
        }
    };
    let mut env = p.env().clone().unwrap_or_default();
    for kv in &a.env {
        let Some((k, _)) = kv.split_once('=') else {
            bail!("--env {kv:?}: expected KEY=VALUE");
        };
        env.retain(|e| e.split_once('=').map(|(ek, _)| ek) != Some(k));
        env.push(kv.clone());
    }
    p.set_env(Some(env));
    if let Some(cwd) = &a.cwd {
        p.set_cwd(cwd.clone());
    }
    if a.tty {
        p.set_terminal(Some(true));
    }
    if let Some(u) = &a.user {
        let (uid, gid) = match u.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (u.as_str(), None),
        };
        let mut user = p.user().clone();
        user.set_uid(
            uid.parse()
                .with_context(|| format!("--user {u:?}: UID must be a number"))?,
        );
        if let Some(g) = gid {
            user.set_gid(
                g.parse()
                    .with_context(|| format!("--user {u:?}: GID must be a number"))?,
            );
        }
        p.set_user(user);
    }
    if !a.additional_gids.is_empty() {
        let mut user = p.user().clone();
        user.set_additional_gids(Some(a.additional_gids.clone()));
        p.set_user(user);
    }
    if !a.cap.is_empty() {
        let mut caps = p
            .capabilities()
            .clone()
            .unwrap_or_else(podlet_runtime::process::init::no_capabilities);
        for name in &a.cap {
            let c: oci_spec::runtime::Capability = name
                .trim_start_matches("CAP_")
                .parse()
                .map_err(|_| anyhow!("--cap {name:?}: unknown capability"))?;
            for set in [
                caps.bounding().clone(),
                caps.effective().clone(),
                caps.permitted().clone(),
            ]
            .iter()
            .enumerate()
            {
                let mut s = set.1.clone().unwrap_or_default();
                s.insert(c);
                match set.0 {
                    0 => caps.set_bounding(Some(s)),
                    1 => caps.set_effective(Some(s)),
                    _ => caps.set_permitted(Some(s)),
                };
            }
        }
        p.set_capabilities(Some(caps));
    }
    if a.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    Ok(p)
}

fn execute(cli: &Cli) -> Result<ExitCode> {
    match &cli.command {
        Command::Spec { bundle, rootless } => {
            let path = bundle.join("config.json");
            if path.exists() {
                bail!("{} already exists; remove it first", path.display());
            }
            let mut spec = if *rootless {
                oci_spec_rootless()
            } else {
                oci_spec::runtime::Spec::default()
            };
            spec.set_hostname(Some("podlet".into()));
            // runc's default leaves inheritable and ambient empty (CVE-2022-29162): a
            // non-root program with inheritable file capabilities must not gain them.
            if let Some(mut process) = spec.process().clone() {
                if let Some(mut caps) = process.capabilities().clone() {
                    caps.set_inheritable(None);
                    caps.set_ambient(None);
                    process.set_capabilities(Some(caps));
                }
                spec.set_process(Some(process));
            }
            if let Some(linux) = spec.linux_mut() {
                linux.set_masked_paths(Some(
                    podlet_runtime::spec::DEFAULT_MASKED_PATHS
                        .iter()
                        .map(|p| p.to_string())
                        .collect(),
                ));
            }
            std::fs::write(&path, serde_json::to_vec_pretty(&spec)?)
                .with_context(|| format!("writing {}", path.display()))?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Features => {
            println!("{}", serde_json::to_string_pretty(&features())?);
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let rt = runtime(cli)?;
    match &cli.command {
        Command::Create { opts, id } => {
            rt.create(id, &opts.bundle, &create_opts(opts)?)?;
        }
        Command::Run {
            opts,
            detach,
            keep,
            id,
        } => {
            let st = rt.create(id, &opts.bundle, &create_opts(opts)?)?;
            if let Err(e) = rt.start(id) {
                let _ = rt.delete(id, true);
                return Err(e.into());
            }
            if *detach {
                return Ok(ExitCode::SUCCESS);
            }
            let code = rt.wait_child(st.pid);
            if !*keep {
                rt.delete(id, true)?;
            }
            return Ok(ExitCode::from(code.clamp(0, 255) as u8));
        }
        Command::Start { id } => {
            rt.start(id)?;
        }
        Command::State { id } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&runc_state_json(&rt.state(id)?))?
            );
        }
        Command::Kill { all, id, signal } => rt.kill(id, parse_signal(signal)?, *all)?,
        Command::Delete { force, id } => rt.delete(id, *force)?,
        Command::List { format, quiet } => {
            let all = rt.list()?;
            if *quiet {
                for c in &all {
                    println!("{}", c.id);
                }
            } else if format == "json" {
                let docs: Vec<_> = all.iter().map(runc_state_json).collect();
                println!("{}", serde_json::to_string(&docs)?);
            } else {
                println!(
                    "{:<20} {:<8} {:<10} {:<40} {:<22} OWNER",
                    "ID", "PID", "STATUS", "BUNDLE", "CREATED"
                );
                for c in &all {
                    println!(
                        "{:<20} {:<8} {:<10} {:<40} {:<22} {}",
                        c.id,
                        c.pid,
                        c.status,
                        c.bundle.display(),
                        c.created,
                        c.owner
                    );
                }
            }
        }
        Command::Ps { format, id } => {
            let pids = rt.pids(id)?;
            if format == "json" {
                println!("{}", serde_json::to_string(&pids)?);
            } else {
                println!("{:<8} CMD", "PID");
                for p in pids {
                    let cmd = podlet_runtime::container::process_cmdline(p);
                    println!("{p:<8} {cmd}");
                }
            }
        }
        Command::Exec(a) => {
            let process = exec_process(&rt, a)?;
            let opts = ExecOptions {
                pid_file: a.pid_file.clone(),
                console_socket: a.console_socket.clone(),
                preserve_fds: a.preserve_fds,
                null_stdio: false,
                sub_cgroups: a.cgroup.clone(),
                ignore_paused: a.ignore_paused,
            };
            let pid = rt.exec(&a.id, process, &opts)?;
            if !a.detach {
                let code = rt.wait_child(pid);
                return Ok(ExitCode::from(code.clamp(0, 255) as u8));
            }
        }
        Command::Events {
            stats,
            interval,
            id,
        } => {
            let every = crate::runc_events::parse_interval(interval)?;
            crate::runc_events::run(&rt, id, *stats, every)?;
        }
        Command::Update { args, id } => {
            let res = crate::runc_update::resources(args)?;
            rt.update(id, &res)?;
        }
        Command::Pause { id } => rt.pause(id)?,
        Command::Resume { id } => rt.resume(id)?,
        Command::Spec { .. } | Command::Features => unreachable!("handled above"),
    }
    Ok(ExitCode::SUCCESS)
}

fn oci_spec_rootless() -> oci_spec::runtime::Spec {
    oci_spec::runtime::Spec::rootless(
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    )
}

fn init_logging(cli: &Cli) {
    let level = if cli.debug { "debug" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::new(level);
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let file = cli.log.as_ref().and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok()
    });
    // runc's own line shapes (logrus), which tools reading a runtime's log expect.
    let format = crate::runc_log::RuncFormat {
        json: cli.log_format == "json",
    };
    match file {
        Some(f) => builder
            .event_format(format)
            .with_writer(std::sync::Mutex::new(f))
            .init(),
        None => builder
            .event_format(format)
            .with_writer(std::io::stderr)
            .init(),
    }
}

/// Entry point when the binary runs as `podlet-runc`.
pub fn main(args: Vec<std::ffi::OsString>) -> ExitCode {
    let cli = Cli::parse_from(args.clone());
    init_logging(&cli);
    // Commands that enter a container run from a sealed copy of the binary (CVE-2019-5736).
    if matches!(
        cli.command,
        Command::Create { .. } | Command::Run { .. } | Command::Exec(_)
    ) {
        if let Err(e) = podlet_runtime::sealed_exe::reexec_sealed(&args, &cli.root) {
            eprintln!("podlet-runc: {e}");
            return ExitCode::from(1);
        }
    }
    match execute(&cli) {
        Ok(code) => code,
        Err(e) => {
            if cli.log.is_some() {
                tracing::error!("{e:#}");
            }
            eprintln!("podlet-runc: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
