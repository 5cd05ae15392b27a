//! The node agent for real, in the multi-node tier: a `podlet master` and `podlet agent`s, each
//! in its own node network namespace on a test underlay (nothing in the host's namespace), the
//! real kubectl driving them. Pods run as real containers on each node's CNI bridge, reach each
//! other across nodes over host-gw routes, restart, probe, and move when a node is lost.
//! Everything (agents, containers, sandboxes, namespaces) is torn down even when a check fails.

#[path = "cluster_env.rs"]
mod cluster_env;
#[path = "master_env.rs"]
mod master_env;

use std::time::{Duration, Instant};

use cluster_env::{text, wait_for, Cluster};
use serde_json::Value;

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

/// The web app; `{prestop}` is a host directory its preStop hook writes into.
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
        lifecycle:
          preStop:
            exec: {command: ["sh", "-c", "echo bye > /stopped/$POD_NAME"]}
        volumeMounts: [{name: page, mountPath: /config}, {name: stopped, mountPath: /stopped}]
      volumes:
      - name: page
        configMap: {name: site}
      - name: stopped
        hostPath: {path: "{prestop}", type: DirectoryOrCreate}
"#;

#[test]
fn a_deployment_runs_heals_and_moves_across_three_agents() {
    let mut c = Cluster::new(3);
    let stopped = c.dir.path().join("stopped");
    c.apply(&WEB.replace("{prestop}", stopped.to_str().unwrap()));
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
            let url = format!("http://{ip}:8080/index.html");
            // Routes to another node's pods follow its Node object: allow a moment.
            let page = wait_for(
                &format!("{ip} from node{from}"),
                Duration::from_secs(5),
                || c.fetch(from, &url),
            );
            assert_eq!(page, "hello from podlet v1", "{ip} from node{from}");
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
    kill9(pid);
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
    kill9(c.container_pid(node, &again, "web"));
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
    let terminating = c.kubectl_json(&["get", "pod", &oname, "-o", "json"]);
    if let Some(t) = terminating {
        // Graceful: marked with the pod's grace period until its agent has stopped it.
        assert_eq!(
            t["metadata"]["deletionGracePeriodSeconds"], 5,
            "{}",
            t["metadata"]
        );
    }
    wait_for(
        "the deleted pod gone from the API",
        Duration::from_secs(30),
        || {
            c.kubectl(&["get", "pod", &oname])
                .status
                .success()
                .then_some(())
                .xor(Some(()))
        },
    );
    wait_for("a replacement pod Ready", Duration::from_secs(60), || {
        let pods = c.pods("app=web");
        (pods.len() == 3
            && pods
                .iter()
                .all(|p| p["metadata"]["name"] != oname.as_str() && ready(p)))
        .then_some(())
    });
    // Its preStop hook ran before it was stopped.
    assert_eq!(
        std::fs::read_to_string(stopped.join(&oname))
            .ok()
            .as_deref(),
        Some("bye\n"),
        "the preStop hook did not run"
    );
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
    // The lost node is one that runs a web pod, so the check always has something to move.
    let lost = c
        .pods("app=web")
        .iter()
        .map(|p| c.node_index(p))
        .max()
        .expect("web pods");
    c.kill_agent(lost);
    wait_for(
        "pods of the lost node replaced elsewhere",
        Duration::from_secs(60),
        || {
            let pods = c.pods("app=web");
            let ok = pods.len() == 3 && pods.iter().all(|p| c.node_index(p) != lost && ready(p));
            ok.then_some(())
        },
    );
}

/// SIGKILL to a container process (found through the engine's state; not a name match).
fn kill9(pid: i64) {
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
    // Probe processes' output is discarded, not mixed into the agent's log.
    let log = std::fs::read_to_string(c.dir.path().join("agent0.log")).unwrap();
    assert!(
        !log.contains("/tmp/ready"),
        "probe output in the agent's log:\n{log}"
    );
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

/// Deploys two busybox httpd replicas labelled `app` answering `GREET-<pod name>` on port 80;
/// returns them once both are Running and Ready.
fn two_greeting_pods(c: &Cluster, app: &str, greet: &str) -> Vec<Value> {
    c.apply(&format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {app}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: {app}}}}}
  template:
    metadata: {{labels: {{app: {app}}}}}
    spec:
      containers:
      - name: web
        image: busybox
        imagePullPolicy: Never
        command: ["sh", "-c", "mkdir -p /w && echo {greet}-$HOSTNAME > /w/index.html && exec httpd -f -p 80 -h /w"]
"#
    ));
    wait_for(
        &format!("2 {app} pods Running"),
        Duration::from_secs(60),
        || {
            let pods = c.pods(&format!("app={app}"));
            (pods.len() == 2
                && pods
                    .iter()
                    .all(|p| p["status"]["phase"] == "Running" && ready(p)))
            .then_some(pods)
        },
    )
}

#[test]
fn the_master_is_a_node_too_unless_its_agent_is_disabled() {
    let c = Cluster::with_embedded_agent(2);
    let pods = two_greeting_pods(&c, "hello", "hi");
    let on_master = pods.iter().filter(|p| c.node_index(p) == 0).count();
    assert_eq!(on_master, 1, "one replica on the master's own node");
    for p in &pods {
        let ip = p["status"]["podIP"].as_str().unwrap();
        let name = p["metadata"]["name"].as_str().unwrap();
        assert_eq!(
            c.fetch(1, &format!("http://{ip}/"))
                .map(|s| s.trim().to_string()),
            Some(format!("hi-{name}"))
        );
    }
}

#[test]
fn pods_reach_each_other_across_nodes_over_vxlan() {
    let c = Cluster::with_agent_args(2, &["--flannel-backend", "vxlan"]);
    let pods = two_greeting_pods(&c, "overlay", "via");
    assert_ne!(
        c.node_index(&pods[0]),
        c.node_index(&pods[1]),
        "both replicas on one node"
    );
    for p in &pods {
        let ip = p["status"]["podIP"].as_str().unwrap();
        let other = 1 - c.node_index(p);
        let name = p["metadata"]["name"].as_str().unwrap();
        let page = wait_for(
            &format!("{ip} from node{other}"),
            Duration::from_secs(5),
            || c.fetch(other, &format!("http://{ip}/")),
        );
        assert_eq!(page.trim(), format!("via-{name}"));
        // The route to the other node's pods goes through the overlay device.
        let cidr = c
            .kubectl_json(&[
                "get",
                "node",
                &format!("node{}", c.node_index(p)),
                "-o",
                "json",
            ])
            .unwrap()["spec"]["podCIDR"]
            .as_str()
            .unwrap()
            .to_string();
        let out = c.topo.nodes[other]
            .run("ip", &["route", "show", &cidr])
            .unwrap();
        let route = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            route.contains("dev podlet.vxlan"),
            "{cidr} on node{other}: {route}"
        );
    }
}

#[test]
fn memory_pressure_evicts_pods_and_their_controller_replaces_them() {
    // A threshold no machine meets: the node is under memory pressure from the start.
    let c = Cluster::with_agent_args(1, &["--eviction-hard", "memory.available<100Ti"]);
    c.apply(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: hungry}
spec:
  replicas: 1
  selector: {matchLabels: {app: hungry}}
  template:
    metadata: {labels: {app: hungry}}
    spec:
      containers: [{name: c, image: busybox, imagePullPolicy: Never, command: ["sleep", "1000"]}]
"#,
    );
    let evicted = wait_for("an evicted pod", Duration::from_secs(60), || {
        c.pods("app=hungry")
            .into_iter()
            .find(|p| p["status"]["reason"] == "Evicted")
    });
    assert_eq!(
        evicted["status"]["phase"], "Failed",
        "{}",
        evicted["status"]
    );
    assert!(evicted["status"]["message"]
        .as_str()
        .unwrap()
        .contains("memory"));
    let uid = evicted["metadata"]["uid"].as_str().unwrap().to_string();
    let out = c.podlet(0, &["pod", "ps", "--format", "json"]);
    let pods: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        !pods.iter().any(|p| p["name"] == format!("k8s-{uid}")),
        "the evicted pod's sandbox still exists"
    );
    // Its ReplicaSet made another one.
    wait_for(
        "a replacement for the evicted pod",
        Duration::from_secs(30),
        || (c.pods("app=hungry").len() >= 2).then_some(()),
    );
    let node = c
        .kubectl_json(&["get", "node", "node0", "-o", "json"])
        .unwrap();
    let pressure = node["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["type"] == "MemoryPressure")
        .unwrap()["status"]
        .clone();
    assert_eq!(pressure, "True");
}

/// A docker-registry with basic auth (`tester`/`s3cret`) on node0's loopback, killed (by pid)
/// on drop; the agent of node0 pulls from it as `localhost:5000`.
struct PrivateRegistry(std::process::Child);

impl PrivateRegistry {
    fn start(c: &Cluster) -> PrivateRegistry {
        let dir = c.dir.path().join("registry");
        std::fs::create_dir_all(&dir).unwrap();
        let o = std::process::Command::new("htpasswd")
            .args(["-Bbn", "tester", "s3cret"])
            .output()
            .expect("htpasswd installed (apache2-utils)");
        std::fs::write(dir.join("htpasswd"), &o.stdout).unwrap();
        let cfg = dir.join("registry.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {0}/data\nhttp:\n  addr: 127.0.0.1:5000\nauth:\n  htpasswd:\n    realm: podlet-test\n    path: {0}/htpasswd\n",
                dir.display()
            ),
        )
        .unwrap();
        let child = c.topo.nodes[0]
            .netns()
            .command("docker-registry", &["serve", cfg.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("registry.log")).unwrap())
            .spawn()
            .expect("docker-registry installed (scripts/install-deps.sh)");
        PrivateRegistry(child)
    }
}

impl Drop for PrivateRegistry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `podlet` with a store of its own (not the agent's), in node0's namespace.
fn side_store(c: &Cluster, args: &[&str]) -> std::process::Output {
    let root = c.dir.path().join("push-store");
    c.topo.nodes[0]
        .netns()
        .command(cluster_env::PODLET, &[])
        .arg("--root")
        .arg(root.join("root"))
        .arg("--state")
        .arg(root.join("state"))
        .args(args)
        .output()
        .unwrap()
}

const PRIVATE: &str = "localhost:5000/private/bb:1";

/// A pod of the private image; `extra` is more of its spec (YAML, indented for `spec:`).
fn private_pod(name: &str, extra: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
{extra}
"#
    )
}

#[test]
fn private_images_security_contexts_and_node_policies_are_honoured() {
    // Every agent: RuntimeDefault seccomp unless a pod says otherwise, 40 processes per pod,
    // and image GC at any disk usage (so an unused image goes at the next pass).
    let c = Cluster::with_agent_args(
        1,
        &[
            "--seccomp-default",
            "--pod-max-pids",
            "40",
            "--image-gc-high-threshold",
            "0",
            "--image-gc-low-threshold",
            "0",
            "--minimum-image-ttl-duration",
            "0s",
        ],
    );
    let _registry = PrivateRegistry::start(&c);
    let tar = c.dir.path().join("busybox.tar");
    let o = side_store(&c, &["image", "import", tar.to_str().unwrap(), "bb"]);
    assert!(o.status.success(), "{}", text(&o));
    wait_for("the image pushed", Duration::from_secs(20), || {
        let o = side_store(&c, &["push", "--creds", "tester:s3cret", "bb", PRIVATE]);
        o.status.success().then_some(())
    });
    c.kubectl_ok(&[
        "create",
        "secret",
        "docker-registry",
        "regcred",
        "--docker-server=localhost:5000",
        "--docker-username=tester",
        "--docker-password=s3cret",
    ]);
    let get = |name: &str| c.kubectl_json(&["get", "pod", name, "-o", "json"]);
    let waiting = |name: &str| -> Option<(String, String)> {
        let w = get(name)?["status"]["containerStatuses"][0]["state"]["waiting"].clone();
        Some((w["reason"].as_str()?.into(), w["message"].as_str()?.into()))
    };
    // Without the pull secret the registry refuses the pull.
    c.apply(&private_pod(
        "anonymous",
        &format!("  containers: [{{name: c, image: \"{PRIVATE}\", command: [sleep, \"600\"]}}]"),
    ));
    let (reason, msg) = wait_for("anonymous pull refused", Duration::from_secs(60), || {
        waiting("anonymous").filter(|(r, _)| r == "ErrImagePull")
    });
    assert!(msg.contains("authentication required"), "{reason}: {msg}");
    c.kubectl_ok(&["delete", "pod", "anonymous", "--grace-period=0", "--force"]);
    // With it: pulled and running as the asked-for user, with fsGroup-owned volumes, a
    // memory-backed emptyDir, the runtime's seccomp filter and the pod's process limit.
    c.apply(&private_pod(
        "private",
        &format!(
            r#"  imagePullSecrets: [{{name: regcred}}]
  securityContext: {{runAsNonRoot: true, runAsUser: 1000, fsGroup: 2000}}
  volumes:
  - {{name: scratch, emptyDir: {{medium: Memory, sizeLimit: 8Mi}}}}
  - {{name: creds, secret: {{secretName: regcred, defaultMode: 0400}}}}
  containers:
  - name: c
    image: "{PRIVATE}"
    command: [sleep, "600"]
    volumeMounts: [{{name: scratch, mountPath: /scratch}}, {{name: creds, mountPath: /creds}}]"#
        ),
    ));
    let pod = wait_for("the private pod Running", Duration::from_secs(90), || {
        let p = get("private")?;
        (p["status"]["phase"] == "Running").then_some(p)
    });
    let id = format!("k8s-{}.c.c.0", pod["metadata"]["uid"].as_str().unwrap());
    let exec = |script: &str| {
        let o = c.podlet(0, &["exec", &id, "sh", "-c", script]);
        text(&o)
    };
    let status = exec("cat /proc/self/status");
    let field = |name: &str| -> String {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no {name} in {status}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(field("Uid"), "1000 1000 1000 1000", "{status}");
    assert!(field("Groups").split(' ').any(|g| g == "2000"), "{status}");
    assert_eq!(
        field("Seccomp"),
        "2",
        "not under a seccomp filter: {status}"
    );
    // The filter refuses a new user namespace (this kernel lets an unprivileged process make
    // one, so only seccomp says no).
    let out = exec("unshare -U true && echo UNSHARED || echo REFUSED");
    assert!(out.contains("REFUSED"), "{out}");
    let mounts = exec("cat /proc/mounts");
    assert!(
        mounts
            .lines()
            .any(|l| l.starts_with("tmpfs /scratch tmpfs") && l.contains("size=8192k")),
        "/scratch is not an 8 MiB tmpfs:\n{mounts}"
    );
    let ls = exec("ls -lnd /scratch; ls -lna /creds/..data/");
    assert!(ls.contains("drwxrwsrwx") && ls.contains(" 2000 "), "{ls}");
    assert!(
        ls.contains("-r--r-----"),
        "secret files are not group-readable: {ls}"
    );
    let out = exec("echo hi > /scratch/f && ls -ln /scratch/f");
    assert!(out.contains(" 1000 ") && out.contains(" 2000 "), "{out}");
    // 40 processes for the whole pod: 60 background sleeps cannot all start.
    let out = exec(
        "i=0; while [ $i -lt 60 ]; do sleep 30 </dev/null >/dev/null 2>&1 & i=$((i+1)); done; echo started",
    );
    assert!(
        out.contains("can't fork") || out.contains("Resource temporarily unavailable"),
        "{out}"
    );
    // privileged: every capability, no seccomp filter (even with --seccomp-default), /sys
    // writable, nothing masked in /proc.
    c.apply(&private_pod(
        "privileged",
        &format!(
            r#"  imagePullSecrets: [{{name: regcred}}]
  containers:
  - {{name: c, image: "{PRIVATE}", command: [sleep, "600"], securityContext: {{privileged: true}}}}"#
        ),
    ));
    let p = wait_for(
        "the privileged pod Running",
        Duration::from_secs(60),
        || {
            let p = get("privileged")?;
            (p["status"]["phase"] == "Running").then_some(p)
        },
    );
    let pid = format!("k8s-{}.c.c.0", p["metadata"]["uid"].as_str().unwrap());
    let pexec = |script: &str| text(&c.podlet(0, &["exec", &pid, "sh", "-c", script]));
    let st = pexec("cat /proc/self/status");
    assert!(st.contains("Seccomp:\t0"), "{st}");
    // Every capability this host lets the agent have (this machine withholds some).
    let host = std::fs::read_to_string("/proc/self/status").unwrap();
    let cap_eff = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("CapEff:"))
            .map(String::from)
    };
    assert_eq!(cap_eff(&st), cap_eff(&host), "{st}");
    let mounts = pexec("cat /proc/mounts");
    assert!(
        mounts.lines().any(|l| l.starts_with("sysfs /sys sysfs rw")),
        "/sys is not writable:\n{mounts}"
    );
    assert!(
        !mounts.contains(" /proc/keys "),
        "/proc/keys still masked:\n{mounts}"
    );
    // The unprivileged pod has them masked.
    assert!(exec("cat /proc/mounts").contains(" /proc/keys "));
    // runAsNonRoot against the image's own user (root): refused with kubelet's message.
    c.apply(&private_pod(
        "rootish",
        &format!(
            r#"  imagePullSecrets: [{{name: regcred}}]
  securityContext: {{runAsNonRoot: true}}
  containers: [{{name: c, image: "{PRIVATE}", command: [sleep, "600"]}}]"#
        ),
    ));
    let (reason, msg) = wait_for("rootish refused", Duration::from_secs(60), || {
        waiting("rootish").filter(|(r, _)| r == "CreateContainerConfigError")
    });
    assert!(msg.contains("image will run as root"), "{reason}: {msg}");
    // The image stays while a container uses it…
    std::thread::sleep(Duration::from_secs(12));
    let images = text(&c.podlet(0, &["image", "ls"]));
    assert!(images.contains("private/bb"), "{images}");
    let agent_pid = c.agents[0].as_ref().unwrap().id();
    let scratch = format!(
        "{}/volumes/scratch",
        pod["metadata"]["uid"].as_str().unwrap()
    );
    let mountinfo = || std::fs::read_to_string(format!("/proc/{agent_pid}/mountinfo")).unwrap();
    assert!(mountinfo().contains(&scratch));
    // …and while a pod names it without any container of its own (rootish never started
    // one; a crashing container between restarts is the same case)…
    c.kubectl_ok(&["delete", "pod", "private", "privileged", "--wait=true"]);
    assert!(
        !mountinfo().contains(&scratch),
        "the tmpfs outlived its pod"
    );
    std::thread::sleep(Duration::from_secs(12));
    let images = text(&c.podlet(0, &["image", "ls"]));
    assert!(
        images.contains("private/bb"),
        "collected while rootish names it: {images}"
    );
    // …and is collected once nothing does.
    c.kubectl_ok(&["delete", "pod", "rootish", "--wait=true"]);
    wait_for(
        "the unused image collected",
        Duration::from_secs(40),
        || {
            let images = text(&c.podlet(0, &["image", "ls"]));
            (!images.contains("private/bb")).then_some(())
        },
    );
}
