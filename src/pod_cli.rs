//! `podlet pod …`: pods for people (a sandbox holding the shared namespaces, attached to a CNI
//! network, and containers joining it), plus the bookkeeping `podlet run --pod` and
//! `--network bridge` share: which pod a container belongs to, and leaving it on removal.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use podlet_runtime::pod::{cni, PodNetwork, PodSpec, PodState, Pods};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Where CNI configurations and plugins are found.
#[derive(Debug, Args, Clone, Default)]
pub struct CniArgs {
    /// Directory of CNI network configurations.
    #[arg(long, value_name = "DIR", default_value = cni::DEFAULT_CONF_DIR)]
    pub cni_conf_dir: PathBuf,
    /// Directories of CNI plugins, ':'-separated (podlet's own directory is searched last).
    #[arg(long, value_name = "DIRS", default_value = cni::DEFAULT_PLUGIN_DIR)]
    pub cni_path: String,
}

impl CniArgs {
    fn plugin_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::env::split_paths(&self.cni_path)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        if let Some(own) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_path_buf))
        {
            dirs.push(own);
        }
        dirs
    }

    /// The pod network for a `--network` value.
    pub fn network(&self, value: &str) -> Result<PodNetwork> {
        Ok(match value {
            "none" => PodNetwork::None,
            "host" => PodNetwork::Host,
            name => {
                let name = if name == "bridge" {
                    cni::DEFAULT_NETWORK
                } else {
                    name
                };
                if name.is_empty() || name.contains('/') {
                    bail!("--network {value:?}: expected none, host, bridge or a CNI network name");
                }
                PodNetwork::Cni {
                    name: name.to_string(),
                    conf_dir: self.cni_conf_dir.clone(),
                    plugin_dirs: self.plugin_dirs(),
                }
            }
        })
    }
}

/// `podlet pod` subcommands.
#[derive(Debug, Subcommand)]
pub enum PodCommand {
    /// Create a pod: a sandbox holding network, IPC and UTS namespaces; prints its name.
    Create(CreateArgs),
    /// Create a pod and its containers from a Kubernetes Pod manifest (YAML or JSON).
    Run {
        /// The manifest (`-` for stdin).
        #[arg(long = "file", short = 'f')]
        file: PathBuf,
        /// Network for a pod without `hostNetwork: true`: none, bridge or a CNI network name.
        #[arg(long, default_value = "bridge")]
        network: String,
        #[command(flatten)]
        cni: CniArgs,
    },
    /// List pods.
    Ps {
        /// Output format.
        #[arg(long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
    },
    /// Show pods as JSON.
    Inspect {
        /// Pod names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Stop pods: their containers (SIGTERM, then SIGKILL), network and sandbox.
    Stop {
        /// Seconds to wait before SIGKILL.
        #[arg(long, short, default_value_t = 10)]
        time: u64,
        /// Pod names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove pods and their containers.
    Rm {
        /// Stop running pods first.
        #[arg(long, short)]
        force: bool,
        /// Pod names.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// `podlet pod create` flags.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Pod name (default: a random id).
    #[arg(long)]
    name: Option<String>,
    /// Hostname of the pod (default: its name).
    #[arg(long)]
    hostname: Option<String>,
    /// Network: none, host, bridge (the default CNI network `podlet`), or a CNI network name.
    #[arg(long, default_value = "bridge")]
    network: String,
    /// A label KEY=VALUE to record.
    #[arg(long = "label", short = 'l')]
    labels: Vec<String>,
    #[command(flatten)]
    cni: CniArgs,
}

/// Which pod a container belongs to (`containers/<name>/pod.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Membership {
    /// The pod's name.
    pub pod: String,
    /// Created for this one container (`podlet run --network bridge`): removed with it.
    pub implicit: bool,
}

/// Records that the container whose snapshot is `dir` belongs to `pod`.
pub fn record_membership(dir: &Path, m: &Membership) -> Result<()> {
    std::fs::write(dir.join("pod.json"), serde_json::to_vec(m)?)?;
    Ok(())
}

/// The pod a container's snapshot directory belongs to, if any.
pub fn membership(dir: &Path) -> Option<Membership> {
    serde_json::from_slice(&std::fs::read(dir.join("pod.json")).ok()?).ok()
}

/// Takes the container `id` out of its pod; an implicit pod is removed with it (network
/// released). Call when the container is removed.
pub fn leave_pod(state: &Path, dir: &Path, id: &str) -> Result<()> {
    let Some(m) = membership(dir) else {
        return Ok(());
    };
    let pods = Pods::new(state);
    if m.implicit {
        match pods.remove(&m.pod) {
            Ok(()) | Err(podlet_runtime::pod::PodError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    } else {
        match pods.remove_container(&m.pod, id) {
            Ok(()) | Err(podlet_runtime::pod::PodError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Creates a pod whose sandbox is this binary's hidden `pause` subcommand.
pub fn create_pod(state: &Path, spec: &PodSpec) -> Result<PodState> {
    let exe = std::env::current_exe().context("locate the podlet binary")?;
    Ok(Pods::new(state).create(spec, &exe, &["pause"])?)
}

fn parse_labels(labels: &[String]) -> Result<std::collections::BTreeMap<String, String>> {
    labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("--label {l:?}: expected KEY=VALUE"),
        })
        .collect()
}

/// The global paths every pod command needs.
#[derive(Debug, Clone, Copy)]
pub struct Paths<'a> {
    /// Image store root.
    pub root: &'a Path,
    /// Runtime state root.
    pub state: &'a Path,
    /// Cgroup root override.
    pub cgroup_root: Option<&'a Path>,
}

/// Runs one `podlet pod` subcommand.
pub fn run(p: Paths<'_>, cmd: &PodCommand) -> Result<ExitCode> {
    match cmd {
        PodCommand::Create(a) => {
            let name = a.name.clone().unwrap_or_else(crate::run_cli::random_id);
            let spec = PodSpec {
                name,
                hostname: a.hostname.clone(),
                network: a.cni.network(&a.network)?,
                labels: parse_labels(&a.labels)?,
            };
            let st = create_pod(p.state, &spec)?;
            println!("{}", st.name);
            Ok(ExitCode::SUCCESS)
        }
        PodCommand::Run { file, network, cni } => crate::pod_manifest::run(p, file, network, cni),
        PodCommand::Ps { format } => ps(p, format),
        PodCommand::Inspect { names } => {
            let pods = Pods::new(p.state);
            let mut out = Vec::new();
            for n in names {
                let st = pods.load(n)?;
                let mut v = serde_json::to_value(&st)?;
                v["running"] = json!(st.is_running());
                out.push(v);
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
        PodCommand::Stop { time, names } => Ok(crate::run_cli::for_each_name(names, |n| {
            stop_pod(p, n, *time)
        })),
        PodCommand::Rm { force, names } => Ok(crate::run_cli::for_each_name(names, |n| {
            let pods = Pods::new(p.state);
            let st = pods.load(n)?;
            if st.is_running() && !force {
                bail!("pod {n} is running: stop it first or use --force");
            }
            stop_pod(p, n, 0)?;
            if !st.containers.is_empty() {
                crate::run_cli::remove_containers(p, &st.containers)?;
            }
            pods.remove(n)?;
            Ok(())
        })),
    }
}

/// Stops a pod's containers, then its network and sandbox.
fn stop_pod(p: Paths<'_>, name: &str, timeout: u64) -> Result<()> {
    let pods = Pods::new(p.state);
    let st = pods.load(name)?;
    crate::run_cli::stop_containers(p, &st.containers, timeout)?;
    pods.stop(name)?;
    Ok(())
}

fn ps(p: Paths<'_>, format: &str) -> Result<ExitCode> {
    let pods = Pods::new(p.state).list()?;
    if format == "json" {
        let rows: Vec<_> = pods
            .iter()
            .map(|st| {
                json!({"name": st.name, "id": st.id, "status": if st.is_running() {"Running"} else {"Exited"},
                       "ip": st.ip, "containers": st.containers, "created": st.created, "network": st.network})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<20} {:<10} {:<16} {:<10} CREATED",
        "NAME", "STATUS", "IP", "CONTAINERS"
    );
    for st in &pods {
        println!(
            "{:<20} {:<10} {:<16} {:<10} {}",
            st.name,
            if st.is_running() { "Running" } else { "Exited" },
            st.ip.as_deref().unwrap_or("-"),
            st.containers.len(),
            st.created
        );
    }
    Ok(ExitCode::SUCCESS)
}
