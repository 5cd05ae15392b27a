//! The node agent for real, in the multi-node tier: a `podlet master` and `podlet agent`s, each
//! in its own node network namespace on a test underlay (nothing in the host's namespace), the
//! real kubectl driving them. Pods run as real containers on each node's CNI bridge, reach each
//! other across nodes over host-gw routes, restart, probe, and move when a node is lost.
//! Everything (agents, containers, sandboxes, namespaces) is torn down even when a check fails.

#[path = "master_env.rs"]
mod master_env;

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use master_env::Master;
use podlet_testkit::topology::Topology;
use podlet_testkit::{bins, busybox};
use serde_json::Value;

const PODLET: &str = env!("CARGO_BIN_EXE_podlet");

struct NodeDirs {
    root: PathBuf,
    state: PathBuf,
    data: PathBuf,
}

/// A master on node0 and an agent on every node; torn down on drop.
struct Cluster {
    dir: tempfile::TempDir,
    nodes: Vec<NodeDirs>,
    agents: Vec<Option<Child>>,
    master: Option<Master>,
    topo: Topology,
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
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
    fn new(n: usize) -> Cluster {
        let topo = Topology::new(n, &bins::workspace_bin("podlet-test-workload")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let rootfs = busybox::rootfs(
            &dir.path().join("rootfs"),
            &[
                "sh", "httpd", "sleep", "cat", "echo", "wget", "mkdir", "rm", "touch", "ls", "env",
                "kill", "trap",
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
        let master = Master::start_with(
            topo.nodes[0].netns().command(PODLET, &[]),
            &dir.path().join("master"),
            &format!("{ip}:6443"),
            &["--tls-san", &ip],
        );
        let mut c = Cluster {
            dir,
            nodes,
            agents: (0..n).map(|_| None).collect(),
            master: Some(master),
            topo,
        };
        for i in 0..n {
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

    fn master_dir(&self) -> PathBuf {
        self.dir.path().join("master")
    }

    fn start_agent(&mut self, i: usize) {
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
        let mut cmd = self.topo.nodes[i].netns().command(PODLET, &[]);
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
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.agents[i] = Some(cmd.spawn().expect("start podlet agent"));
    }

    /// SIGKILL, as a crash would.
    fn kill_agent(&mut self, i: usize) {
        if let Some(mut a) = self.agents[i].take() {
            let _ = a.kill();
            let _ = a.wait();
        }
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        let kc = self.master_dir().join("admin.kubeconfig");
        self.topo.nodes[0]
            .netns()
            .command("kubectl", &["--kubeconfig", kc.to_str().unwrap()])
            .args(args)
            .output()
            .expect("kubectl installed (scripts/install-deps.sh)")
    }

    fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(out.status.success(), "kubectl {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn kubectl_json(&self, args: &[&str]) -> Option<Value> {
        let out = self.kubectl(args);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    fn apply(&self, manifest: &str) {
        let path = self.dir.path().join(format!("m-{}.yaml", manifest.len()));
        fs::write(&path, manifest).unwrap();
        self.kubectl_ok(&["apply", "-f", path.to_str().unwrap()]);
    }

    fn pods(&self, selector: &str) -> Vec<Value> {
        self.kubectl_json(&["get", "pods", "-l", selector, "-o", "json"])
            .and_then(|v| v["items"].as_array().cloned())
            .unwrap_or_default()
    }

    /// `curl URL` from node `from`'s namespace (the host's curl).
    fn fetch(&self, from: usize, url: &str) -> Option<String> {
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
    fn podlet(&self, i: usize, args: &[&str]) -> Output {
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
    fn container_pid(&self, i: usize, pod: &Value, container: &str) -> i64 {
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

    fn node_index(&self, pod: &Value) -> usize {
        let name = pod["spec"]["nodeName"].as_str().unwrap();
        name.trim_start_matches("node").parse().unwrap()
    }

    fn logs(&self) -> String {
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

fn ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn restarts(p: &Value) -> i64 {
    p["status"]["containerStatuses"][0]["restartCount"]
        .as_i64()
        .unwrap_or(0)
}

const WEB: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: site}
data:
  index.html: "hello from podlet v1"
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData:
  token: s3cret-token
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: web
        image: busybox
        imagePullPolicy: Never
        command: ["sh", "-c", "mkdir -p /w && echo \"$TOKEN $POD_NAME\" > /w/token.txt && httpd -p 8081 -h /w && exec httpd -f -p 8080 -h /config"]
        env:
        - name: TOKEN
          valueFrom: {secretKeyRef: {name: creds, key: token}}
        - name: POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
        ports: [{containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /index.html, port: 8080}
          periodSeconds: 1
        volumeMounts: [{name: page, mountPath: /config}]
      volumes:
      - name: page
        configMap: {name: site}
"#;

#[test]
fn a_deployment_runs_heals_and_moves_across_three_agents() {
    let mut c = Cluster::new(3);
    c.apply(WEB);
    let pods = wait_for(
        "3 web pods Running and Ready",
        Duration::from_secs(90),
        || {
            let pods = c.pods("app=web");
            (pods.len() == 3
                && pods
                    .iter()
                    .all(|p| p["status"]["phase"] == "Running" && ready(p)))
            .then_some(pods)
        },
    );
    c.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let nodes: std::collections::BTreeSet<String> = pods
        .iter()
        .map(|p| p["spec"]["nodeName"].as_str().unwrap().to_string())
        .collect();
    assert!(nodes.len() >= 2, "3 replicas on one node: {nodes:?}");
    // Every pod answers HTTP from every node, with the ConfigMap page and the Secret in env.
    for p in &pods {
        let ip = p["status"]["podIP"].as_str().expect("a pod IP");
        assert!(
            ip.starts_with("10.42."),
            "pod IP {ip} outside the cluster CIDR"
        );
        assert_eq!(
            p["status"]["hostIP"].as_str().unwrap(),
            format!("10.213.0.{}", c.node_index(p) + 1)
        );
        for from in 0..3 {
            let page = c.fetch(from, &format!("http://{ip}:8080/index.html"));
            assert_eq!(
                page.as_deref(),
                Some("hello from podlet v1"),
                "{ip} from node{from}"
            );
        }
        let token = c.fetch(0, &format!("http://{ip}:8081/token.txt")).unwrap();
        let name = p["metadata"]["name"].as_str().unwrap();
        assert_eq!(token.trim(), format!("s3cret-token {name}"));
    }

    // A ConfigMap update reaches the mounted file of running pods, without a restart.
    c.kubectl_ok(&[
        "patch",
        "configmap",
        "site",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"index.html":"hello from podlet v2"}}"#,
    ]);
    let ip0 = pods[0]["status"]["podIP"].as_str().unwrap().to_string();
    wait_for("the updated page", Duration::from_secs(30), || {
        (c.fetch(1, &format!("http://{ip0}:8080/index.html"))
            .as_deref()
            == Some("hello from podlet v2"))
        .then_some(())
    });

    // kill -9 of a container's process: restarted at once (restartCount 1), then backed off.
    let victim = pods[0].clone();
    let vname = victim["metadata"]["name"].as_str().unwrap().to_string();
    let node = c.node_index(&victim);
    let pid = c.container_pid(node, &victim, "web");
    unsafe_kill(pid);
    let again = wait_for(
        "restartCount 1 and Running",
        Duration::from_secs(30),
        || {
            let p = c.kubectl_json(&["get", "pod", &vname, "-o", "json"])?;
            (restarts(&p) == 1
                && p["status"]["containerStatuses"][0]["state"]["running"].is_object())
            .then_some(p)
        },
    );
    assert_eq!(
        again["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"], 137,
        "{}",
        again["status"]
    );
    let killed_again = Instant::now();
    unsafe_kill(c.container_pid(node, &again, "web"));
    wait_for("CrashLoopBackOff", Duration::from_secs(20), || {
        let p = c.kubectl_json(&["get", "pod", &vname, "-o", "json"])?;
        (p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "CrashLoopBackOff")
            .then_some(())
    });
    wait_for("restartCount 2", Duration::from_secs(40), || {
        let p = c.kubectl_json(&["get", "pod", &vname, "-o", "json"])?;
        (restarts(&p) == 2 && ready(&p)).then_some(())
    });
    assert!(
        killed_again.elapsed() >= Duration::from_secs(9),
        "the second restart did not back off"
    );

    // kill -9 of an agent: its pods keep running and are adopted, not restarted.
    let other = pods
        .iter()
        .find(|p| c.node_index(p) != node)
        .unwrap()
        .clone();
    let onode = c.node_index(&other);
    let oname = other["metadata"]["name"].as_str().unwrap().to_string();
    let before_pid = c.container_pid(onode, &other, "web");
    c.kill_agent(onode);
    let oip = other["status"]["podIP"].as_str().unwrap().to_string();
    assert_eq!(
        c.fetch(0, &format!("http://{oip}:8080/index.html"))
            .as_deref(),
        Some("hello from podlet v2")
    );
    c.start_agent(onode);
    std::thread::sleep(Duration::from_secs(3));
    let after = c
        .kubectl_json(&["get", "pod", &oname, "-o", "json"])
        .unwrap();
    assert_eq!(
        restarts(&after),
        0,
        "the agent's restart restarted a container"
    );
    assert!(ready(&after));
    assert_eq!(c.container_pid(onode, &after, "web"), before_pid);

    // kubectl delete pod: stopped, removed from its node, and replaced.
    c.kubectl_ok(&["delete", "pod", &oname, "--wait=false"]);
    wait_for("a replacement pod Ready", Duration::from_secs(60), || {
        let pods = c.pods("app=web");
        (pods.len() == 3
            && pods
                .iter()
                .all(|p| p["metadata"]["name"] != oname.as_str() && ready(p)))
        .then_some(())
    });
    wait_for(
        "the deleted pod's sandbox gone from its node",
        Duration::from_secs(30),
        || {
            let out = c.podlet(onode, &["pod", "ps", "--format", "json"]);
            let pods: Vec<Value> = serde_json::from_slice(&out.stdout).ok()?;
            let uid = other["metadata"]["uid"].as_str().unwrap();
            (!pods.iter().any(|p| p["name"] == format!("k8s-{uid}"))).then_some(())
        },
    );

    // A node whose agent stops: its pods are replaced on the others.
    let lost = 2;
    let on_lost: Vec<String> = c
        .pods("app=web")
        .iter()
        .filter(|p| c.node_index(p) == lost)
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    c.kill_agent(lost);
    if !on_lost.is_empty() {
        wait_for(
            "pods of the lost node replaced elsewhere",
            Duration::from_secs(60),
            || {
                let pods = c.pods("app=web");
                let ok =
                    pods.len() == 3 && pods.iter().all(|p| c.node_index(p) != lost && ready(p));
                ok.then_some(())
            },
        );
    }
}

/// SIGKILL to a container process (found through the engine's state; not a name match).
fn unsafe_kill(pid: i64) {
    assert!(pid > 1, "no pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the container process");
}

const PROBES: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: flaky, labels: {app: flaky}}
spec:
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    command: ["sh", "-c", "touch /tmp/alive; sleep 2; rm /tmp/alive; exec sleep 1000"]
    livenessProbe:
      exec: {command: ["cat", "/tmp/alive"]}
      periodSeconds: 1
      failureThreshold: 1
---
apiVersion: v1
kind: Pod
metadata: {name: unready, labels: {app: unready}}
spec:
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    command: ["sleep", "1000"]
    readinessProbe:
      exec: {command: ["cat", "/tmp/ready"]}
      periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: unready}
spec:
  selector: {app: unready}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: no-image}
spec:
  containers: [{name: c, image: "nosuch/image:1", imagePullPolicy: Never}]
---
apiVersion: v1
kind: Pod
metadata: {name: no-secret}
spec:
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    command: ["sleep", "1000"]
    env: [{name: X, valueFrom: {secretKeyRef: {name: missing, key: k}}}]
---
apiVersion: v1
kind: Pod
metadata: {name: once}
spec:
  restartPolicy: Never
  initContainers:
  - {name: init, image: busybox, imagePullPolicy: Never, command: ["sh", "-c", "echo init-ran > /work/init.txt"], volumeMounts: [{name: work, mountPath: /work}]}
  containers:
  - {name: c, image: busybox, imagePullPolicy: Never, command: ["cat", "/work/init.txt"], volumeMounts: [{name: work, mountPath: /work}]}
  volumes: [{name: work, emptyDir: {}}]
"#;

#[test]
fn probes_restart_policies_and_bad_pods_report_truthfully() {
    let c = Cluster::new(1);
    c.apply(PROBES);
    let get = |name: &str| c.kubectl_json(&["get", "pod", name, "-o", "json"]);
    let waiting = |name: &str| -> Option<String> {
        get(name)?["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
            .as_str()
            .map(String::from)
    };
    wait_for("ErrImageNeverPull", Duration::from_secs(60), || {
        (waiting("no-image")? == "ErrImageNeverPull").then_some(())
    });
    wait_for(
        "CreateContainerConfigError",
        Duration::from_secs(60),
        || (waiting("no-secret")? == "CreateContainerConfigError").then_some(()),
    );
    let msg = get("no-secret").unwrap()["status"]["containerStatuses"][0]["state"]["waiting"]
        ["message"]
        .clone();
    assert!(msg.as_str().unwrap_or("").contains("missing"), "{msg}");
    // Init containers run first; a restartPolicy Never pod that exits 0 Succeeded.
    wait_for(
        "the pod with an init container Succeeded",
        Duration::from_secs(60),
        || (get("once")?["status"]["phase"] == "Succeeded").then_some(()),
    );
    let once = get("once").unwrap();
    assert_eq!(
        once["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"], 0,
        "{}",
        once["status"]
    );
    let log = c.podlet(
        0,
        &[
            "logs",
            &format!("k8s-{}.c.c.0", once["metadata"]["uid"].as_str().unwrap()),
        ],
    );
    assert_eq!(String::from_utf8_lossy(&log.stdout).trim(), "init-ran");
    // A failing liveness probe restarts the container.
    wait_for(
        "the liveness probe restarts flaky",
        Duration::from_secs(60),
        || (restarts(&get("flaky")?) >= 1).then_some(()),
    );
    // Readiness false: Running but not Ready, and listed as not ready in the endpoints.
    let unready = wait_for("unready Running", Duration::from_secs(30), || {
        let p = get("unready")?;
        (p["status"]["phase"] == "Running").then_some(p)
    });
    std::thread::sleep(Duration::from_secs(2));
    let unready = get("unready").unwrap_or(unready);
    assert!(!ready(&unready), "{}", unready["status"]);
    let ep = wait_for("endpoints for unready", Duration::from_secs(30), || {
        let ep = c.kubectl_json(&["get", "endpoints", "unready", "-o", "json"])?;
        ep["subsets"][0]["notReadyAddresses"]
            .is_array()
            .then_some(ep)
    });
    assert!(ep["subsets"][0]["addresses"].is_null(), "{ep}");
    assert_eq!(
        ep["subsets"][0]["notReadyAddresses"][0]["ip"],
        unready["status"]["podIP"]
    );
    // Becoming ready moves it into the addresses.
    let id = format!("k8s-{}.c.c.0", unready["metadata"]["uid"].as_str().unwrap());
    let out = c.podlet(0, &["exec", &id, "touch", "/tmp/ready"]);
    assert!(out.status.success(), "{}", text(&out));
    wait_for(
        "unready becomes Ready and an endpoint",
        Duration::from_secs(30),
        || {
            let ep = c.kubectl_json(&["get", "endpoints", "unready", "-o", "json"])?;
            ep["subsets"][0]["addresses"].is_array().then_some(())
        },
    );
}
