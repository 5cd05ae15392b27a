//! Shared by the agent tests and `make bench-pods`: a cluster in the multi-node tier — a
//! `podlet master` on node0 and a `podlet agent` on every node, each in its node's network
//! namespace, busybox imported into every node's store; kubectl and curl run inside the
//! namespaces. Dropping it stops the agents and the master and removes every pod sandbox and
//! container they made (from inside each node's namespace), then the topology.
#![allow(dead_code)] // each user takes a different part

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::master_env::Master;
use podlet_testkit::topology::Topology;
use podlet_testkit::{bins, busybox};
use serde_json::Value;

/// The podlet binary under test.
pub const PODLET: &str = env!("CARGO_BIN_EXE_podlet");

/// One node's podlet directories.
pub struct NodeDirs {
    /// Image store.
    pub root: PathBuf,
    /// Runtime state.
    pub state: PathBuf,
    /// The agent's data directory.
    pub data: PathBuf,
}

/// A master on node0 and an agent on every node; torn down on drop.
pub struct Cluster {
    /// Where everything lives.
    pub dir: tempfile::TempDir,
    /// Per node directories.
    pub nodes: Vec<NodeDirs>,
    /// The agents, by node.
    pub agents: Vec<Option<Child>>,
    /// The master (on node0).
    pub master: Option<Master>,
    /// The namespaces.
    pub topo: Topology,
    /// Extra `podlet agent` flags for every agent.
    pub agent_args: Vec<String>,
}

/// A command's stdout and stderr.
pub fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

impl Cluster {
    /// A master on node0 and agents on `n` nodes, all Ready with a pod CIDR.
    pub fn new(n: usize) -> Cluster {
        Cluster::build(n, false, &[])
    }

    /// Like [`Cluster::new`], but node0's agent is the one `podlet master` runs itself.
    pub fn with_embedded_agent(n: usize) -> Cluster {
        Cluster::build(n, true, &[])
    }

    /// Like [`Cluster::new`], every agent started with `args` too.
    pub fn with_agent_args(n: usize, args: &[&str]) -> Cluster {
        Cluster::build(n, false, args)
    }

    fn build(n: usize, embedded: bool, agent_args: &[&str]) -> Cluster {
        let topo = Topology::new(n, &bins::workspace_bin("podlet-test-workload")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let rootfs = busybox::rootfs(
            &dir.path().join("rootfs"),
            &[
                "sh", "httpd", "sleep", "cat", "echo", "wget", "mkdir", "rm", "touch", "ls", "env",
                "kill", "trap", "unshare", "nslookup",
            ],
        );
        busybox::with_users(&rootfs);
        let tar = busybox::tar(&rootfs, &dir.path().join("busybox.tar"));
        let mut nodes = Vec::new();
        for i in 0..n {
            let base = dir.path().join(format!("node{i}"));
            let d = NodeDirs {
                root: base.join("root"),
                state: base.join("state"),
                data: base.join("agent"),
            };
            let out = Command::new(PODLET)
                .arg("--root")
                .arg(&d.root)
                .args(["image", "import", tar.to_str().unwrap(), "busybox"])
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", text(&out));
            nodes.push(d);
        }
        let ip = topo.nodes[0].ip.to_string();
        let master = if embedded {
            let mut program = topo.nodes[0].netns().command(PODLET, &[]);
            program
                .arg("--root")
                .arg(&nodes[0].root)
                .arg("--state")
                .arg(&nodes[0].state);
            Master::start_with_agent(
                program,
                &dir.path().join("master"),
                &format!("{ip}:6443"),
                &["--tls-san", &ip, "--node-name", "node0", "--node-ip", &ip],
            )
        } else {
            Master::start_with(
                topo.nodes[0].netns().command(PODLET, &[]),
                &dir.path().join("master"),
                &format!("{ip}:6443"),
                &["--tls-san", &ip],
            )
        };
        let mut c = Cluster {
            dir,
            nodes,
            agents: (0..n).map(|_| None).collect(),
            master: Some(master),
            topo,
            agent_args: agent_args.iter().map(|a| a.to_string()).collect(),
        };
        for i in usize::from(embedded)..n {
            c.start_agent(i);
        }
        wait_for(
            "every node Ready with a pod CIDR",
            Duration::from_secs(60),
            || {
                let nodes = c.kubectl_json(&["get", "nodes", "-o", "json"])?;
                let items = nodes["items"].as_array()?;
                let ready = items
                    .iter()
                    .filter(|n| n["spec"]["podCIDR"].is_string())
                    .filter(|n| {
                        n["status"]["conditions"].as_array().is_some_and(|cs| {
                            cs.iter()
                                .any(|c| c["type"] == "Ready" && c["status"] == "True")
                        })
                    })
                    .count();
                (ready == n).then_some(())
            },
        );
        c
    }

    /// The master's data directory.
    pub fn master_dir(&self) -> PathBuf {
        self.dir.path().join("master")
    }

    /// Starts node `i`'s agent (logging to `agent<i>.log`).
    pub fn start_agent(&mut self, i: usize) {
        let d = &self.nodes[i];
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("agent{i}.log")))
            .unwrap();
        let server = format!("https://{}:6443", self.topo.nodes[0].ip);
        let token_file = self.master_dir().join("node-token");
        let ca = self.master_dir().join("ca.crt");
        let ip = self.topo.nodes[i].ip.to_string();
        let name = format!("node{i}");
        // Its own mount namespace (host mounts propagate in, none out): the agent's tmpfs
        // volumes never land in the host's mount table.
        let mut cmd = self.topo.nodes[i].netns().command(
            "unshare",
            &["--mount", "--propagation", "slave", "--", PODLET],
        );
        cmd.arg("--root")
            .arg(&d.root)
            .arg("--state")
            .arg(&d.state)
            .args([
                "--log-level",
                "info",
                "agent",
                "--server",
                &server,
                "--token-file",
            ])
            .arg(&token_file)
            .arg("--ca-file")
            .arg(&ca)
            .args(["--node-name", &name, "--node-ip", &ip, "--data-dir"])
            .arg(&d.data)
            .args(&self.agent_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.agents[i] = Some(cmd.spawn().expect("start podlet agent"));
    }

    /// SIGKILL, as a crash would.
    pub fn kill_agent(&mut self, i: usize) {
        if let Some(mut a) = self.agents[i].take() {
            let _ = a.kill();
            let _ = a.wait();
        }
    }

    /// Runs the real kubectl with the admin kubeconfig inside node0's namespace.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        let kc = self.master_dir().join("admin.kubeconfig");
        self.topo.nodes[0]
            .netns()
            .command("kubectl", &["--kubeconfig", kc.to_str().unwrap()])
            .args(args)
            .output()
            .expect("kubectl installed (scripts/install-deps.sh)")
    }

    /// kubectl that must succeed; its stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(out.status.success(), "kubectl {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// kubectl's JSON output, if it succeeded.
    pub fn kubectl_json(&self, args: &[&str]) -> Option<Value> {
        let out = self.kubectl(args);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    /// `kubectl apply` of a YAML manifest.
    pub fn apply(&self, manifest: &str) {
        let path = self.dir.path().join(format!("m-{}.yaml", manifest.len()));
        fs::write(&path, manifest).unwrap();
        self.kubectl_ok(&["apply", "-f", path.to_str().unwrap()]);
    }

    /// The pods matching a label selector.
    pub fn pods(&self, selector: &str) -> Vec<Value> {
        self.kubectl_json(&["get", "pods", "-l", selector, "-o", "json"])
            .and_then(|v| v["items"].as_array().cloned())
            .unwrap_or_default()
    }

    /// `curl URL` from node `from`'s namespace (the host's curl).
    pub fn fetch(&self, from: usize, url: &str) -> Option<String> {
        let out = self.topo.nodes[from]
            .netns()
            .command("curl", &["-sS", "-m", "3", url])
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!("curl {url} from node{from}: {}", text(&out));
        }
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `podlet --root --state ARGS` for node `i`, run in its namespace.
    pub fn podlet(&self, i: usize, args: &[&str]) -> Output {
        let d = &self.nodes[i];
        self.topo.nodes[i]
            .netns()
            .command(PODLET, &[])
            .arg("--root")
            .arg(&d.root)
            .arg("--state")
            .arg(&d.state)
            .args(args)
            .output()
            .unwrap()
    }

    /// The pid of a pod's container on node `i`, from the engine's state.
    pub fn container_pid(&self, i: usize, pod: &Value, container: &str) -> i64 {
        let uid = pod["metadata"]["uid"].as_str().unwrap();
        let restarts = pod["status"]["containerStatuses"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["name"] == container))
            .and_then(|c| c["restartCount"].as_i64())
            .unwrap_or(0);
        let id = format!("k8s-{uid}.c.{container}.{restarts}");
        let out = self.podlet(i, &["inspect", &id]);
        assert!(out.status.success(), "inspect {id}: {}", text(&out));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v[0]["State"]["Pid"].as_i64().unwrap()
    }

    /// The index of the node a pod is bound to.
    pub fn node_index(&self, pod: &Value) -> usize {
        let name = pod["spec"]["nodeName"].as_str().unwrap();
        name.trim_start_matches("node").parse().unwrap()
    }

    /// The end of every agent's log, for failure reports.
    pub fn logs(&self) -> String {
        (0..self.nodes.len())
            .map(|i| {
                let log = fs::read_to_string(self.dir.path().join(format!("agent{i}.log")))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                format!(
                    "--- agent{i} (last lines) ---\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for i in 0..self.agents.len() {
            self.kill_agent(i);
        }
        self.master.take();
        // What the agents started: every pod sandbox and container, removed from inside the
        // node's namespace (CNI DEL runs there), then the namespaces go with the topology.
        for i in 0..self.nodes.len() {
            let out = self.podlet(i, &["pod", "ps", "--format", "json"]);
            let pods: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
            for p in pods {
                if let Some(name) = p["name"].as_str() {
                    let _ = self.podlet(i, &["pod", "rm", "-f", name]);
                }
            }
            let out = self.podlet(i, &["ps", "-a", "--format", "json"]);
            let ctrs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
            for c in ctrs {
                if let Some(name) = c["name"].as_str() {
                    let _ = self.podlet(i, &["rm", "-f", name]);
                }
            }
        }
    }
}
