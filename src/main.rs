//! The `podlet` binary: one executable with subcommands, k3s style.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use podlet_runtime::cgroups::CgroupRoot;
use podlet_runtime::kernel_check;

mod agent_cli;
mod image_cli;
mod kube_cli;
mod pod_cli;
mod pod_manifest;
mod progress;
mod run_cli;
mod runc_cli;
mod runc_events;
mod runc_log;
mod runc_update;
mod tty;

/// podlet: a Linux container runtime, node agent and small Kubernetes-compatible master.
#[derive(Debug, Parser)]
#[command(name = "podlet", version, about)]
struct Cli {
    /// Cgroup root, relative to the cgroup podlet was started in (an absolute path must lie below it).
    #[arg(long, global = true, value_name = "PATH")]
    cgroup_root: Option<PathBuf>,
    /// podlet's data directory (images, layers, container snapshots).
    #[arg(long, global = true, default_value = podlet_runtime::image::store::DEFAULT_ROOT)]
    root: PathBuf,
    /// Runtime state of podlet's containers.
    #[arg(long, global = true, default_value = run_cli::DEFAULT_STATE)]
    state: PathBuf,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `debug` or `podlet_runtime=trace`.
    #[arg(long, global = true, default_value = "warn", value_name = "FILTER")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

/// Output formats for commands that print data.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    /// Aligned text for people.
    Table,
    /// JSON for scripts.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check that this kernel and host can run podlet containers, and show the cgroup root.
    CheckConfig {
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Manage images: import, load, ls, rm, prune.
    #[command(subcommand)]
    Image(image_cli::ImageCommand),
    /// List images (same as `image ls`).
    Images {
        /// Output format.
        #[arg(long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
        /// Print only image ids.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Remove images (same as `image rm`).
    Rmi {
        /// Remove even if containers use it.
        #[arg(long, short)]
        force: bool,
        /// Image names or ids.
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Pull an image from a registry.
    Pull {
        #[command(flatten)]
        registry: image_cli::RegistryArgs,
        /// Image reference (name[:tag] or name@sha256:…).
        reference: String,
    },
    /// Push an image to a registry.
    Push {
        #[command(flatten)]
        registry: image_cli::RegistryArgs,
        /// Image name or id.
        image: String,
        /// Destination reference (default: the image's name).
        destination: Option<String>,
    },
    /// Run a command in a new container from an image.
    Run(Box<run_cli::RunArgs>),
    /// List containers.
    Ps {
        /// Also stopped containers.
        #[arg(long, short)]
        all: bool,
        /// Output format.
        #[arg(long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
    },
    /// Print a detached container's output.
    Logs {
        /// Keep printing until the container exits.
        #[arg(long, short)]
        follow: bool,
        /// Container name.
        name: String,
    },
    /// Stop containers: SIGTERM, then SIGKILL after the timeout.
    Stop {
        /// Seconds to wait before SIGKILL.
        #[arg(long, short, default_value_t = 10)]
        time: u64,
        /// Container names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Send a signal to a container.
    Kill {
        /// Signal name or number.
        #[arg(long, short, default_value = "KILL")]
        signal: String,
        /// Container name.
        name: String,
    },
    /// Run a command in a running container.
    Exec(run_cli::ExecArgs),
    /// Show containers' configuration and state as JSON.
    Inspect {
        /// Container names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// The per-container monitor (started by `podlet run -d`).
    #[command(hide = true)]
    Monitor {
        /// The container's snapshot directory.
        dir: PathBuf,
    },
    /// Manage pods: containers sharing network, IPC and UTS namespaces.
    #[command(subcommand)]
    Pod(pod_cli::PodCommand),
    /// Run the node agent: join a master and run the pods it binds to this node.
    Agent(agent_cli::AgentArgs),
    /// Run the master: a Kubernetes-compatible API server (TLS, tokens) on SQLite or etcd.
    Master {
        /// State directory: the SQLite store, CA and certificates, tokens, encryption key.
        #[arg(long, default_value = podlet_master::serve::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Address to serve the API on.
        #[arg(long, default_value = "0.0.0.0:6443")]
        listen: std::net::SocketAddr,
        /// etcd endpoints, comma-separated (default: the embedded SQLite store).
        #[arg(long, value_delimiter = ',')]
        etcd_endpoints: Vec<String>,
        /// Extra host names or IP addresses for the serving certificate.
        #[arg(long)]
        tls_san: Vec<String>,
        /// With etcd: the cluster token of the first master, so this one shares its CA, tokens
        /// and encryption key (default: `<data-dir>/cluster-token`, made on first start).
        #[arg(long)]
        token: Option<String>,
        /// Do not run a node agent in the master (by default the master's host is a node too).
        #[arg(long)]
        disable_agent: bool,
        /// The master's own node name (default: the host name).
        #[arg(long)]
        node_name: Option<String>,
        /// The master's own node address (default: the first non-loopback IPv4).
        #[arg(long)]
        node_ip: Option<std::net::Ipv4Addr>,
        /// How the master's own node routes pod traffic to the others: host-gw or vxlan.
        #[arg(long, default_value = "host-gw")]
        flannel_backend: podlet_agent::RouteBackend,
    },
    /// Apply manifests to the cluster (server-side apply), like `kubectl apply -f`.
    Apply {
        #[command(flatten)]
        cluster: kube_cli::ClusterArgs,
        /// Manifest file (YAML or JSON, several documents allowed; `-` for stdin).
        #[arg(long = "filename", short = 'f')]
        file: PathBuf,
    },
    /// List or show cluster objects, like `kubectl get`.
    Get {
        #[command(flatten)]
        cluster: kube_cli::ClusterArgs,
        /// Kind (pods, deploy, svc, nodes, …).
        kind: String,
        /// One object.
        name: Option<String>,
        /// All namespaces.
        #[arg(long, short = 'A')]
        all_namespaces: bool,
        /// Label selector.
        #[arg(long, short = 'l')]
        selector: Option<String>,
        /// Output: table, wide, json, yaml or name.
        #[arg(long, short = 'o', default_value = "table")]
        output: String,
    },
    /// Describe a cluster object, like `kubectl describe`.
    Describe {
        #[command(flatten)]
        cluster: kube_cli::ClusterArgs,
        /// Kind.
        kind: String,
        /// Name.
        name: String,
    },
    /// Delete cluster objects, like `kubectl delete`.
    Delete {
        #[command(flatten)]
        cluster: kube_cli::ClusterArgs,
        /// Manifest file naming what to delete.
        #[arg(long = "filename", short = 'f')]
        file: Option<PathBuf>,
        /// Kind, then names.
        #[arg(required_unless_present = "file")]
        kind: Option<String>,
        /// Names.
        names: Vec<String>,
    },
    /// Scale a Deployment or ReplicaSet, like `kubectl scale`.
    Scale {
        #[command(flatten)]
        cluster: kube_cli::ClusterArgs,
        /// KIND/NAME.
        target: String,
        /// The new replica count.
        #[arg(long)]
        replicas: i32,
    },
    /// Manage Deployment rollouts, like `kubectl rollout`.
    Rollout {
        #[command(flatten)]
        cluster: kube_cli::ClusterArgs,
        #[command(subcommand)]
        cmd: kube_cli::RolloutCommand,
    },
    /// A pod's sandbox process: holds its namespaces until stopped.
    #[command(hide = true)]
    Pause,
    /// Remove containers.
    Rm {
        /// Kill running containers first.
        #[arg(long, short)]
        force: bool,
        /// Container names.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// Checks whose failure makes podlet unusable on this host.
const REQUIRED: &[&str] = &[
    "namespace: mount",
    "namespace: pid",
    "namespace: uts",
    "namespace: ipc",
    "namespace: net",
    "cgroup root",
];

fn check_config(cli: &Cli, format: Format) -> Result<ExitCode> {
    let checks = kernel_check::run_checks(cli.cgroup_root.as_deref());
    let failed_required: Vec<&str> = checks
        .iter()
        .filter(|c| !c.ok && REQUIRED.contains(&c.name.as_str()))
        .map(|c| c.name.as_str())
        .collect();
    match format {
        Format::Json => {
            let root = CgroupRoot::discover(cli.cgroup_root.as_deref()).ok();
            let doc = serde_json::json!({ "checks": checks, "cgroupRoot": root });
            println!(
                "{}",
                serde_json::to_string_pretty(&doc).context("encoding JSON")?
            );
        }
        Format::Table => {
            let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
            for c in &checks {
                let mark = if c.ok { "ok" } else { "MISSING" };
                println!("{:<width$}  {:<7}  {}", c.name, mark, c.detail);
            }
        }
    }
    if failed_required.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "podlet: required features missing: {}",
            failed_required.join(", ")
        );
        Ok(ExitCode::from(1))
    }
}

/// Runs one async client command on a small runtime.
fn block(fut: impl std::future::Future<Output = Result<ExitCode>>) -> Result<ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?
        .block_on(fut)
}

fn run_master(
    cfg: podlet_master::serve::MasterConfig,
    agent: Option<agent_cli::EmbeddedAgent>,
) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let store = if cfg.etcd.is_empty() {
        format!("SQLite at {}", cfg.data_dir.join("state.db").display())
    } else {
        format!("etcd at {}", cfg.etcd.join(","))
    };
    let data_dir = cfg.data_dir.clone();
    rt.block_on(podlet_master::serve::serve(cfg, move |addr, sec| {
        // Where things are; never the secrets themselves.
        println!("podlet master: serving https://{addr} (store: {store})");
        println!(
            "podlet master: admin kubeconfig: {}",
            sec.kubeconfig.display()
        );
        println!(
            "podlet master: node join token: {}",
            data_dir.join("node-token").display()
        );
        if let Some(agent) = agent {
            match agent.config(addr, &sec.join_token, &data_dir) {
                Ok(cfg) => {
                    println!("podlet master: node agent for node {}", cfg.node_name);
                    tokio::spawn(async move {
                        if let Err(e) = podlet_agent::run(cfg).await {
                            eprintln!("podlet master: the node agent stopped: {e}");
                        }
                    });
                }
                Err(e) => eprintln!("podlet master: no node agent: {e:#}"),
            }
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }))?;
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    // Multicall: invoked as `podlet-runc` (a link to this binary), speak runc's CLI.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let invoked_as = args
        .first()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    if invoked_as.as_deref() == Some("podlet-runc") {
        return runc_cli::main(args);
    }
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = match &cli.command {
        Command::CheckConfig { format } => check_config(&cli, *format),
        Command::Image(cmd) => image_cli::run(&cli.root, cmd),
        Command::Images { format, quiet } => image_cli::run(
            &cli.root,
            &image_cli::ImageCommand::Ls {
                format: format.clone(),
                quiet: *quiet,
            },
        ),
        Command::Rmi { force, images } => image_cli::run(
            &cli.root,
            &image_cli::ImageCommand::Rm {
                force: *force,
                images: images.clone(),
            },
        ),
        Command::Pull {
            registry,
            reference,
        } => image_cli::pull(&cli.root, reference, registry),
        Command::Push {
            registry,
            image,
            destination,
        } => image_cli::push(&cli.root, image, destination.as_deref(), registry),
        Command::Run(args) => run_cli::run(&cli.root, &cli.state, cli.cgroup_root.as_deref(), args),
        Command::Ps { all, format } => run_cli::ps(
            &cli.root,
            &cli.state,
            cli.cgroup_root.as_deref(),
            *all,
            format,
        ),
        Command::Logs { follow, name } => run_cli::logs(&cli.root, &cli.state, name, *follow),
        Command::Stop { time, names } => run_cli::stop(
            &cli.root,
            &cli.state,
            cli.cgroup_root.as_deref(),
            *time,
            names,
        ),
        Command::Kill { signal, name } => run_cli::kill(
            &cli.root,
            &cli.state,
            cli.cgroup_root.as_deref(),
            signal,
            name,
        ),
        Command::Exec(a) => run_cli::exec(&cli.root, &cli.state, cli.cgroup_root.as_deref(), a),
        Command::Inspect { names } => {
            run_cli::inspect(&cli.root, &cli.state, cli.cgroup_root.as_deref(), names)
        }
        Command::Monitor { dir } => podlet_runtime::engine::monitor::run(dir)
            .map(|code| ExitCode::from(code.clamp(0, 255) as u8))
            .map_err(anyhow::Error::from),
        Command::Pod(cmd) => pod_cli::run(
            pod_cli::Paths {
                root: &cli.root,
                state: &cli.state,
                cgroup_root: cli.cgroup_root.as_deref(),
            },
            cmd,
        ),
        Command::Pause => podlet_runtime::pod::sandbox::pause_main(),
        Command::Apply { cluster, file } => block(kube_cli::apply(cluster, file)),
        Command::Get {
            cluster,
            kind,
            name,
            all_namespaces,
            selector,
            output,
        } => block(kube_cli::get(
            cluster,
            kind,
            name.as_deref(),
            *all_namespaces,
            selector.as_deref(),
            output,
        )),
        Command::Describe {
            cluster,
            kind,
            name,
        } => block(kube_cli::describe(cluster, kind, name)),
        Command::Delete {
            cluster,
            file,
            kind,
            names,
        } => block(kube_cli::delete(
            cluster,
            kind.as_deref(),
            names,
            file.as_deref(),
        )),
        Command::Scale {
            cluster,
            target,
            replicas,
        } => block(kube_cli::scale(cluster, target, *replicas)),
        Command::Rollout { cluster, cmd } => block(kube_cli::rollout(cluster, cmd)),
        Command::Agent(a) => agent_cli::run(&cli.root, &cli.state, cli.cgroup_root.as_deref(), a),
        Command::Master {
            data_dir,
            listen,
            etcd_endpoints,
            tls_san,
            token,
            disable_agent,
            node_name,
            node_ip,
            flannel_backend,
        } => run_master(
            podlet_master::serve::MasterConfig {
                data_dir: data_dir.clone(),
                listen: *listen,
                etcd: etcd_endpoints.clone(),
                tls_san: tls_san.clone(),
                token: token.clone(),
            },
            (!disable_agent).then(|| agent_cli::EmbeddedAgent {
                node_name: node_name.clone(),
                node_ip: *node_ip,
                root: cli.root.clone(),
                state: cli.state.clone(),
                cgroup_root: cli.cgroup_root.clone(),
                backend: *flannel_backend,
            }),
        ),
        Command::Rm { force, names } => run_cli::rm(
            &cli.root,
            &cli.state,
            cli.cgroup_root.as_deref(),
            *force,
            names,
        ),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("podlet: {e:#}");
            ExitCode::from(1)
        }
    }
}
