//! The multi-node tier: network namespaces as nodes.
//!
//! An underlay namespace holds a bridge; each node is its own network namespace joined to the
//! bridge by a veth pair, with its own state directory. Nothing is created in the host's network
//! namespace and no named netns (`/run/netns`, a host mount) is used: each namespace is held by
//! a small holder process that the topology started and kills on drop, which frees the
//! namespace and every link in it.

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// Why a topology could not be built or a command in it failed.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// A helper program failed to start.
    #[error("starting {what}: {source}")]
    Spawn {
        /// What was started.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A command ran but failed.
    #[error("{command} failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// The namespace holder did not report ready.
    #[error("netns holder {pid} did not become ready")]
    HolderNotReady {
        /// Its pid.
        pid: u32,
    },
}

/// A process that owns one network namespace for as long as it lives.
#[derive(Debug)]
pub struct NetnsHolder {
    child: Child,
}

impl NetnsHolder {
    /// Starts `podlet-test-workload netns-holder`, which unshares a network namespace and waits.
    pub fn start(workload: &Path) -> Result<Self, TopologyError> {
        let mut child = Command::new(workload)
            .arg("netns-holder")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|source| TopologyError::Spawn {
                what: workload.display().to_string(),
                source,
            })?;
        let pid = child.id();
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        let ready = BufReader::new(stdout).read_line(&mut line).is_ok() && line.trim() == "ready";
        let holder = NetnsHolder { child };
        if !ready {
            return Err(TopologyError::HolderNotReady { pid });
        }
        Ok(holder)
    }

    /// The holder's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The namespace, as a path other tools can enter (`nsenter --net=…`).
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.pid()))
    }

    /// Runs `program args…` inside the namespace and returns its output, failing on non-zero exit.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<Output, TopologyError> {
        let out = self
            .command(program, args)
            .output()
            .map_err(|source| TopologyError::Spawn {
                what: program.into(),
                source,
            })?;
        if !out.status.success() {
            return Err(TopologyError::Command {
                command: format!("{program} {}", args.join(" ")),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(out)
    }

    /// A `Command` that runs `program args…` inside the namespace.
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.netns_path().display()))
            .arg("--")
            .arg(program)
            .args(args);
        cmd
    }
}

impl Drop for NetnsHolder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One node of a topology.
#[derive(Debug)]
pub struct Node {
    /// The node's name (`node0`, `node1`, …).
    pub name: String,
    /// Its address on the underlay.
    pub ip: Ipv4Addr,
    holder: NetnsHolder,
    state: tempfile::TempDir,
}

impl Node {
    /// The node's network namespace.
    pub fn netns(&self) -> &NetnsHolder {
        &self.holder
    }

    /// The node's own state directory (removed with the topology).
    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }

    /// Runs a program in the node's network namespace.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<Output, TopologyError> {
        self.holder.run(program, args)
    }
}

/// An underlay bridge and N nodes attached to it. Dropping it tears everything down.
#[derive(Debug)]
pub struct Topology {
    /// The nodes, in order.
    pub nodes: Vec<Node>,
    underlay: NetnsHolder,
}

/// The underlay subnet: it exists only inside the topology's own namespaces.
pub const UNDERLAY_PREFIX: [u8; 3] = [10, 213, 0];

impl Topology {
    /// Builds an underlay with `n` nodes at `10.213.0.{1..n}/24`.
    pub fn new(n: usize, workload: &Path) -> Result<Self, TopologyError> {
        assert!(n > 0 && n < 250, "1..250 nodes");
        let underlay = NetnsHolder::start(workload)?;
        underlay.run("ip", &["link", "set", "lo", "up"])?;
        underlay.run("ip", &["link", "add", "br0", "type", "bridge"])?;
        underlay.run("ip", &["link", "set", "br0", "up"])?;
        let mut topo = Topology {
            nodes: Vec::new(),
            underlay,
        };
        for i in 0..n {
            let holder = NetnsHolder::start(workload)?;
            let pid = holder.pid().to_string();
            let port = format!("n{i}");
            // Created from the underlay: `eth0` lands in the node, the peer stays on the bridge.
            topo.underlay.run(
                "ip",
                &[
                    "link", "add", "eth0", "netns", &pid, "type", "veth", "peer", "name", &port,
                ],
            )?;
            topo.underlay
                .run("ip", &["link", "set", &port, "master", "br0", "up"])?;
            let ip = Ipv4Addr::new(
                UNDERLAY_PREFIX[0],
                UNDERLAY_PREFIX[1],
                UNDERLAY_PREFIX[2],
                (i + 1) as u8,
            );
            holder.run("ip", &["link", "set", "lo", "up"])?;
            holder.run("ip", &["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
            holder.run("ip", &["link", "set", "eth0", "up"])?;
            let state = tempfile::Builder::new()
                .prefix(&format!("podlet-node{i}-"))
                .tempdir()
                .map_err(|source| TopologyError::Spawn {
                    what: "state dir".into(),
                    source,
                })?;
            topo.nodes.push(Node {
                name: format!("node{i}"),
                ip,
                holder,
                state,
            });
        }
        Ok(topo)
    }

    /// The underlay namespace (holds the bridge `br0`).
    pub fn underlay(&self) -> &NetnsHolder {
        &self.underlay
    }

    /// Every holder pid (underlay first), for checking teardown.
    pub fn pids(&self) -> Vec<u32> {
        std::iter::once(self.underlay.pid())
            .chain(self.nodes.iter().map(|n| n.holder.pid()))
            .collect()
    }
}
