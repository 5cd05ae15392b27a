//! `podlet-runc`: the runc-compatible command line (the `podlet` binary invoked by that name).

use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use nix::sys::signal::Signal;
use podlet_runtime::cgroups::CgroupRoot;
use podlet_runtime::container::{runc_state_json, CreateOptions, Runtime};
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
}

fn parse_signal(s: &str) -> Result<Signal> {
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
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": ["prestart", "createRuntime", "poststart", "poststop"],
        "mountOptions": ["async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec", "mand", "noatime", "nodev", "nodiratime", "noexec", "nomand", "norelatime", "nostrictatime", "nosuid", "private", "rbind", "relatime", "remount", "ro", "rprivate", "rshared", "rslave", "runbindable", "rw", "shared", "slave", "strictatime", "suid", "sync", "unbindable"],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": caps::all().iter().map(|c| c.to_string()).collect::<Vec<_>>(),
            "cgroup": { "v1": true, "v2": true, "systemd": false, "systemdUser": false },
            "seccomp": { "enabled": false },
            "apparmor": { "enabled": false },
            "selinux": { "enabled": false }
        },
        "annotations": { "org.opencontainers.runtime-spec.features.runtime": "podlet" }
    })
}

fn create_opts(a: &CreateArgs) -> Result<CreateOptions> {
    if a.console_socket.is_some() {
        bail!("--console-socket: terminal containers are not supported yet by podlet-runc");
    }
    Ok(CreateOptions {
        pid_file: a.pid_file.clone(),
        no_pivot: a.no_pivot,
        preserve_fds: a.preserve_fds,
    })
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
    match (file, cli.log_format.as_str()) {
        (Some(f), "json") => builder.json().with_writer(std::sync::Mutex::new(f)).init(),
        (Some(f), _) => builder
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(f))
            .init(),
        (None, "json") => builder.json().with_writer(std::io::stderr).init(),
        (None, _) => builder.with_writer(std::io::stderr).init(),
    }
}

/// Entry point when the binary runs as `podlet-runc`.
pub fn main(args: Vec<std::ffi::OsString>) -> ExitCode {
    let cli = Cli::parse_from(args);
    init_logging(&cli);
    match execute(&cli) {
        Ok(code) => code,
        Err(e) => {
            if cli.log.is_some() {
                tracing::error!("{e:#}");
            }
            eprintln!("podlet-runc: {e:#}");
            ExitCode::from(1)
        }
    }
}
