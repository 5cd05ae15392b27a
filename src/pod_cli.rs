//! `podlet pod …`: pods for people (a sandbox holding the shared namespaces, attached to a CNI
//! network, and containers joining it); the engine does the work, this file parses and prints.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use podlet_runtime::pod::{cni, PodNetwork, PodSpec};
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
        Ok(podlet_runtime::engine::pod_network(
            value,
            &self.cni_conf_dir,
            self.plugin_dirs(),
        )?)
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
    let engine = || crate::run_cli::engine(p.root, p.state, p.cgroup_root);
    match cmd {
        PodCommand::Create(a) => {
            let name = a.name.clone().unwrap_or_else(crate::run_cli::random_id);
            let spec = PodSpec {
                name,
                hostname: a.hostname.clone(),
                network: a.cni.network(&a.network)?,
                labels: parse_labels(&a.labels)?,
                pids_limit: None,
            };
            let st = engine()?.create_pod(&spec)?;
            println!("{}", st.name);
            Ok(ExitCode::SUCCESS)
        }
        PodCommand::Run { file, network, cni } => crate::pod_manifest::run(p, file, network, cni),
        PodCommand::Ps { format } => ps(p, format),
        PodCommand::Inspect { names } => {
            let engine = engine()?;
            let mut out = Vec::new();
            for n in names {
                let st = engine.pod(n)?;
                let mut v = serde_json::to_value(&st)?;
                v["running"] = json!(st.is_running());
                out.push(v);
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
        PodCommand::Stop { time, names } => {
            let engine = engine()?;
            Ok(crate::run_cli::for_each_name(names, |n| {
                Ok(engine.stop_pod(n, Duration::from_secs(*time))?)
            }))
        }
        PodCommand::Rm { force, names } => {
            let engine = engine()?;
            Ok(crate::run_cli::for_each_name(names, |n| {
                Ok(engine.remove_pod(n, *force)?)
            }))
        }
    }
}

fn ps(p: Paths<'_>, format: &str) -> Result<ExitCode> {
    let pods = crate::run_cli::engine(p.root, p.state, p.cgroup_root)?.list_pods()?;
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
