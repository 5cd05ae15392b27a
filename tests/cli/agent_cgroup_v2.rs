//! The agent in the cgroup v2 tier: inside a VM with real cgroup v2 controllers (UML, or QEMU
//! where UML cannot boot), a `podlet master` and a `podlet agent` on the guest's loopback run
//! pods whose limits the kernel enforces: a memory limit kills the container, reported as
//! `OOMKilled`; a CPU limit becomes the container's `cpu.max`; `--pod-max-pids` becomes the
//! pod cgroup's `pids.max`. The host's cgroup2 has no
//! controllers, so this cannot run on the host itself.

#[path = "cluster_env.rs"]
mod cluster_env;
#[path = "master_env.rs"]
mod master_env;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cluster_env::wait_for;
use master_env::Master;
use podlet_testkit::busybox;
use podlet_testkit::vm;
use serde_json::Value;

const PODLET: &str = env!("CARGO_BIN_EXE_podlet");

/// The agent process; its log and the pods' status are printed if the test fails.
struct Agent(Child, PathBuf, PathBuf);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- agent log ---\n{}",
                std::fs::read_to_string(&self.1).unwrap_or_default()
            );
            if let Some(pods) = kubectl(&self.2, &["get", "pods", "-o", "json"]) {
                for p in pods["items"].as_array().into_iter().flatten() {
                    eprintln!("--- pod {} ---\n{}", p["metadata"]["name"], p["status"]);
                }
            }
        }
    }
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> Option<Value> {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// The cgroup v2 directory named `name` below `root`, if any.
fn find_cgroup(root: &Path, name: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(root).ok()?.flatten() {
        let p = e.path();
        if !p.is_dir() {
            continue;
        }
        if e.file_name().to_string_lossy() == name {
            return Some(p);
        }
        if let Some(found) = find_cgroup(&p, name) {
            return Some(found);
        }
    }
    None
}

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: hog}
spec:
  hostNetwork: true
  restartPolicy: Never
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    command: ["sh", "-c", "x=$(head -c 67108864 /dev/zero | tr '\\0' a); echo survived"]
    resources: {limits: {memory: 32Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: capped}
spec:
  hostNetwork: true
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    command: ["sleep", "1000"]
    resources: {limits: {cpu: 500m, memory: 64Mi}, requests: {cpu: 250m}}
"#;

#[test]
#[ignore = "runs inside the cgroup v2 VM; driven by pod_limits_are_enforced_by_cgroup_v2"]
fn inside_vm_pod_limits() {
    assert!(vm::in_vm(), "only meaningful inside the cgroup v2 VM");
    let dir = tempfile::tempdir().unwrap();
    let rootfs = busybox::rootfs(
        &dir.path().join("rootfs"),
        &["sh", "sleep", "head", "tr", "echo", "cat"],
    );
    let tar = busybox::tar(&rootfs, &dir.path().join("busybox.tar"));
    let (root, state) = (dir.path().join("root"), dir.path().join("state"));
    let out = Command::new(PODLET)
        .arg("--root")
        .arg(&root)
        .args(["image", "import", tar.to_str().unwrap(), "busybox"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let master = Master::start(&dir.path().join("master"), &[]);
    let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
    let agent = Agent(
        Command::new(PODLET)
            .arg("--root")
            .arg(&root)
            .arg("--state")
            .arg(&state)
            .args([
                "--log-level",
                "info",
                "agent",
                "--server",
                &format!("https://{}", master.addr),
            ])
            .arg("--token-file")
            .arg(master.data.join("node-token"))
            .arg("--ca-file")
            .arg(master.data.join("ca.crt"))
            .args([
                "--node-name",
                "vm",
                "--node-ip",
                "127.0.0.1",
                "--pod-max-pids",
                "30",
            ])
            .arg("--data-dir")
            .arg(dir.path().join("agent"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
        dir.path().join("agent.log"),
        master.kubeconfig(),
    );
    let kc = master.kubeconfig();
    let manifest = dir.path().join("pods.yaml");
    std::fs::write(&manifest, PODS).unwrap();
    wait_for("the node", Duration::from_secs(120), || {
        let n = kubectl(&kc, &["get", "node", "vm", "-o", "json"])?;
        n["spec"]["podCIDR"].is_string().then_some(())
    });
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kc)
        .args(["apply", "-f", manifest.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // The memory limit: the kernel's OOM killer ends the container, reported as OOMKilled.
    let hog = wait_for("hog terminated", Duration::from_secs(180), || {
        let p = kubectl(&kc, &["get", "pod", "hog", "-o", "json"])?;
        p["status"]["containerStatuses"][0]["state"]["terminated"]
            .is_object()
            .then_some(p)
    });
    let term = &hog["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(term["reason"], "OOMKilled", "{}", hog["status"]);
    assert_eq!(term["exitCode"], 137, "{}", hog["status"]);
    assert_eq!(hog["status"]["phase"], "Failed");
    // The CPU limit: cpu.max; the request: cpu.weight; the memory limit: memory.max.
    let capped = wait_for("capped running", Duration::from_secs(180), || {
        let p = kubectl(&kc, &["get", "pod", "capped", "-o", "json"])?;
        (p["status"]["phase"] == "Running").then_some(p)
    });
    let uid = capped["metadata"]["uid"].as_str().unwrap();
    let cg = find_cgroup(Path::new("/sys/fs/cgroup"), &format!("k8s-{uid}.c.c.0"))
        .expect("the container's cgroup");
    let read = |f: &str| {
        std::fs::read_to_string(cg.join(f))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(read("cpu.max"), "50000 100000");
    assert_eq!(read("memory.max"), (64u64 << 20).to_string());
    // runc's shares → weight: shares 256 → 1 + (256-2)*9999/262142 = 10.
    assert_eq!(read("cpu.weight"), "10");
    assert_eq!(capped["status"]["qosClass"], "Burstable");
    // --pod-max-pids: the pod has a cgroup of its own holding the limit, its containers and
    // its sandbox nested below it.
    let pod_cg = cg.parent().unwrap();
    assert_eq!(
        pod_cg.file_name().unwrap().to_string_lossy(),
        format!("k8s-{uid}")
    );
    let pod_read = |f: &str| {
        std::fs::read_to_string(pod_cg.join(f))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(pod_read("pids.max"), "30");
    let sandbox_procs = std::fs::read_to_string(pod_cg.join("sandbox/cgroup.procs")).unwrap();
    assert_eq!(
        sandbox_procs.lines().count(),
        1,
        "the pause process: {sandbox_procs:?}"
    );
    drop(agent);
    // The pods' processes: removed so the guest powers off clean.
    for name in ["hog", "capped"] {
        let _ = Command::new(PODLET)
            .arg("--root")
            .arg(&root)
            .arg("--state")
            .arg(&state)
            .args(["pod", "rm", "-f", &format!("k8s-{}", pod_uid(&kc, name))])
            .output();
    }
}

fn pod_uid(kc: &Path, name: &str) -> String {
    kubectl(kc, &["get", "pod", name, "-o", "json"])
        .and_then(|p| p["metadata"]["uid"].as_str().map(String::from))
        .unwrap_or_default()
}

#[test]
fn pod_limits_are_enforced_by_cgroup_v2() {
    vm::assert_passes_inside("inside_vm_pod_limits");
}
