//! Pods: containers sharing a sandbox's namespaces (they talk over 127.0.0.1), and the
//! multi-node tier — three node namespaces on an underlay, two pods per node on a CNI bridge,
//! pod-to-pod ICMP and TCP within a node and across nodes with host-gw routes and with a VXLAN
//! overlay (set up through `podlet_cni::routing`, the API the agent calls). Every namespace is
//! one this test made; the topology and the pods are torn down even when an assertion fails.

use std::fs;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use podlet_cni::ipam::Subnet;
use podlet_cni::routing::{self, PeerNode, VxlanConfig};
use podlet_testkit::topology::{NetnsHolder, Topology};
use podlet_testkit::{bins, busybox};
use serde_json::{json, Value};

/// One podlet installation (data, state, CNI config, IPAM data) run inside `netns` (a node's
/// namespace; None: the test's own).
struct Podlet {
    dir: tempfile::TempDir,
    netns: Option<PathBuf>,
}

impl Podlet {
    fn new(netns: Option<&NetnsHolder>) -> Podlet {
        let p = Podlet {
            dir: tempfile::tempdir().unwrap(),
            netns: netns.map(|n| n.netns_path()),
        };
        let rootfs = busybox::rootfs(
            &p.dir.path().join("rootfs"),
            &[
                "sh", "echo", "cat", "hostname", "nc", "ping", "sleep", "ip", "grep",
            ],
        );
        busybox::with_users(&rootfs);
        let tar = busybox::tar(&rootfs, &p.dir.path().join("busybox.tar"));
        let out = p.run(&["image", "import", tar.to_str().unwrap(), "busybox"]);
        assert!(out.status.success(), "{}", err(&out));
        p
    }

    /// Writes the node's CNI network `podnet` for `cidr`.
    fn network(&self, cidr: &str, mtu: u32) {
        let dir = self.dir.path().join("net.d");
        fs::create_dir_all(&dir).unwrap();
        let conf = json!({
            "cniVersion": "1.1.0", "name": "podnet",
            "plugins": [{"type": "podlet-cni", "bridge": "cbr0", "isGateway": true, "mtu": mtu,
                "hairpinMode": true,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": cidr}]],
                         "routes": [{"dst": "0.0.0.0/0"}],
                         "dataDir": self.dir.path().join("ipam")}}],
        });
        fs::write(dir.join("10-podnet.conflist"), conf.to_string()).unwrap();
    }

    fn run(&self, args: &[&str]) -> Output {
        let podlet = env!("CARGO_BIN_EXE_podlet");
        let mut c = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", ns.display()))
                    .arg("--")
                    .arg(podlet);
                c
            }
            None => Command::new(podlet),
        };
        let d = self.dir.path();
        c.arg("--root")
            .arg(d.join("data"))
            .arg("--state")
            .arg(d.join("state"))
            .arg("--cgroup-root")
            .arg(format!("podlet-pods-test-{}", std::process::id()))
            .args(args);
        // Containers inherit stdio: files, never pipes a lingering process could hold.
        let (out_p, err_p) = (d.join("out"), d.join("err"));
        let status = c
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out_p).unwrap())
            .stderr(fs::File::create(&err_p).unwrap())
            .status()
            .unwrap();
        Output {
            status,
            stdout: fs::read(&out_p).unwrap(),
            stderr: fs::read(&err_p).unwrap(),
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "podlet {args:?}: {}", err(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn cni_args(&self) -> Vec<String> {
        vec![
            "--cni-conf-dir".into(),
            self.dir.path().join("net.d").display().to_string(),
            "--cni-path".into(),
            bins::target_profile_dir().display().to_string(),
        ]
    }

    /// `podlet pod create --network podnet NAME`; returns the pod's address.
    fn pod(&self, name: &str) -> String {
        let mut args = vec!["pod", "create", "--name", name, "--network", "podnet"];
        let cni = self.cni_args();
        args.extend(cni.iter().map(String::as_str));
        self.ok(&args);
        let v: Value = serde_json::from_str(&self.ok(&["pod", "inspect", name])).unwrap();
        v[0]["ip"].as_str().expect("pod has an address").to_string()
    }

    fn pods(&self) -> Vec<String> {
        let v: Value = serde_json::from_str(&self.ok(&["pod", "ps", "--format", "json"])).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect()
    }

    fn ipam_files(&self) -> usize {
        fs::read_dir(self.dir.path().join("ipam/podnet"))
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_name().to_string_lossy().parse::<Ipv4Addr>().is_ok())
                    .count()
            })
            .unwrap_or(0)
    }
}

impl Drop for Podlet {
    /// Removes every pod (containers, network, sandbox), also when the test failed.
    fn drop(&mut self) {
        let state = self.dir.path().join("state/pods");
        let names: Vec<String> = fs::read_dir(&state)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.strip_suffix(".json").map(str::to_string)
            })
            .collect();
        if !names.is_empty() {
            let mut args = vec!["pod", "rm", "--force"];
            args.extend(names.iter().map(String::as_str));
            let _ = self.run(&args);
        }
        let containers: Vec<String> = fs::read_dir(self.dir.path().join("data/containers"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        if !containers.is_empty() {
            let mut args = vec!["rm", "--force"];
            args.extend(containers.iter().map(String::as_str));
            let _ = self.run(&args);
        }
    }
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn sandbox_pid(p: &Podlet, pod: &str) -> i64 {
    let v: Value = serde_json::from_str(&p.ok(&["pod", "inspect", pod])).unwrap();
    v[0]["sandbox"]["pid"].as_i64().unwrap()
}

#[test]
fn containers_in_one_pod_share_localhost_and_hostname() {
    let p = Podlet::new(None);
    p.ok(&[
        "pod",
        "create",
        "--name",
        "web",
        "--hostname",
        "webhost",
        "--network",
        "none",
    ]);
    p.ok(&[
        "run",
        "-d",
        "--pod",
        "web",
        "--name",
        "server",
        "busybox",
        "sh",
        "-c",
        "echo hello-over-localhost | nc -l -p 8080",
    ]);
    // The client retries until the server listens; both share the pod's network namespace.
    let out = p.ok(&[
        "run",
        "--rm",
        "--pod",
        "web",
        "busybox",
        "sh",
        "-c",
        "hostname; for i in $(seq 50); do nc 127.0.0.1 8080 && exit 0; sleep 0.1; done; exit 1",
    ]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["webhost", "hello-over-localhost"]
    );
    let ps = p.ok(&["pod", "ps"]);
    assert!(ps.contains("web") && ps.contains("Running"), "{ps}");

    // Bad use is refused with a reason, and nothing is left behind by the refusals.
    let out = p.run(&[
        "run",
        "--rm",
        "--pod",
        "web",
        "--network",
        "host",
        "busybox",
        "true",
    ]);
    assert!(
        !out.status.success() && err(&out).contains("--pod"),
        "{}",
        err(&out)
    );
    let out = p.run(&["run", "--rm", "--pod", "nope", "busybox", "true"]);
    assert!(err(&out).contains("no such pod: nope"), "{}", err(&out));
    let out = p.run(&["pod", "create", "--name", "web", "--network", "none"]);
    assert!(err(&out).contains("already in use"), "{}", err(&out));
    let out = p.run(&["pod", "rm", "web"]);
    assert!(err(&out).contains("stop it first"), "{}", err(&out));

    let sandbox = sandbox_pid(&p, "web");
    p.ok(&["pod", "stop", "-t", "1", "web"]);
    // Gone, or a zombie its reaper has not collected yet: either way no longer running.
    let state = std::fs::read_to_string(format!("/proc/{sandbox}/stat")).unwrap_or_default();
    let running = state
        .rsplit_once(')')
        .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'));
    assert!(!running, "sandbox still runs: {state}");
    assert!(p.ok(&["pod", "ps"]).contains("Exited"));
    p.ok(&["pod", "rm", "web"]);
    assert!(p.pods().is_empty());
    assert!(p.ok(&["ps", "-a"]).lines().count() == 1, "containers left");
}

#[test]
fn pod_run_from_a_kubernetes_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("pod.yaml");
    fs::write(
        &manifest,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: kube\n  labels: {app: demo}\nspec:\n  hostname: kubehost\n  initContainers:\n  - name: init\n    image: busybox\n    command: [sh, -c, 'echo init ran']\n  containers:\n  - name: main\n    image: busybox\n    command: [sh, -c]\n    args: ['echo $GREETING from $(hostname); grep -E \"^(Seccomp|NoNewPrivs):\" /proc/self/status; sleep 30']\n    env:\n    - {name: GREETING, value: hi}\n  - name: side\n    image: busybox\n    command: [sh, -c, 'grep -E \"^(Seccomp|NoNewPrivs):\" /proc/self/status; sleep 30']\n    securityContext:\n      allowPrivilegeEscalation: false\n      seccompProfile: {type: Unconfined}\n",
    )
    .unwrap();
    let holder = NetnsHolder::start(&bins::workspace_bin("podlet-test-workload")).unwrap();
    let q = Podlet::new(Some(&holder));
    q.network("10.91.0.0/24", 1500);
    let mut args = vec![
        "pod",
        "run",
        "-f",
        manifest.to_str().unwrap(),
        "--network",
        "podnet",
    ];
    let cni = q.cni_args();
    args.extend(cni.iter().map(String::as_str));
    let out = q.ok(&args);
    assert!(out.contains("kube"), "{out}");
    let ps = q.ok(&["ps"]);
    assert!(ps.contains("kube-main") && ps.contains("kube-side"), "{ps}");
    assert!(
        !q.ok(&["ps", "-a"]).contains("kube-init"),
        "init containers are removed"
    );
    let mut logs = String::new();
    for _ in 0..50 {
        logs = q.ok(&["logs", "kube-main"]);
        if logs.contains("Seccomp:") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // No seccompProfile: the runtime's default profile; the side container asked for
    // Unconfined and no privilege escalation.
    assert_eq!(
        logs.trim(),
        "hi from kubehost\nNoNewPrivs:\t0\nSeccomp:\t2",
        "{logs}"
    );
    let mut side = String::new();
    for _ in 0..50 {
        side = q.ok(&["logs", "kube-side"]);
        if side.contains("Seccomp:") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(side.trim(), "NoNewPrivs:\t1\nSeccomp:\t0", "{side}");
    let v: Value = serde_json::from_str(&q.ok(&["pod", "inspect", "kube"])).unwrap();
    assert_eq!(v[0]["labels"]["app"], "demo");
    assert!(v[0]["ip"].as_str().unwrap().starts_with("10.91.0."));

    // A manifest that is not a Pod, or not YAML, names the problem and makes nothing.
    let bad = q.dir.path().join("bad.yaml");
    fs::write(&bad, "kind: Deployment\n").unwrap();
    let out = q.run(&["pod", "run", "-f", bad.to_str().unwrap()]);
    assert!(err(&out).contains("is not a Pod"), "{}", err(&out));
    fs::write(
        &bad,
        "kind: Pod\nmetadata: {name: x}\nspec: {containers: [{name: c}]}\n",
    )
    .unwrap();
    let out = q.run(&["pod", "run", "-f", bad.to_str().unwrap()]);
    assert!(err(&out).contains("missing image"), "{}", err(&out));
    assert_eq!(q.pods(), ["kube"]);

    q.ok(&["pod", "rm", "--force", "kube"]);
    assert!(q.pods().is_empty());
    assert_eq!(q.ipam_files(), 0, "address released");

    // `podlet run --network NET`: a pod of its own, gone with the container.
    let mut args = vec!["run", "--rm", "--network", "podnet"];
    args.extend(cni.iter().map(String::as_str));
    args.extend([
        "busybox",
        "sh",
        "-c",
        "ip -4 -o addr show eth0; ping -c 1 -W 2 10.91.0.1 >/dev/null && echo gateway-ok",
    ]);
    let out = q.ok(&args);
    assert!(
        out.contains("inet 10.91.0.") && out.contains("gateway-ok"),
        "{out}"
    );
    assert!(q.pods().is_empty(), "the container's own pod outlived it");
    assert_eq!(q.ipam_files(), 0, "address released");
    let mut args = vec!["run", "-d", "--name", "web", "--network", "podlet-missing"];
    args.extend(cni.iter().map(String::as_str));
    args.extend(["busybox", "true"]);
    let out = q.run(&args);
    assert!(
        err(&out).contains("no CNI network named \"podlet-missing\""),
        "{}",
        err(&out)
    );
    assert!(
        q.ok(&["ps", "-a"]).lines().count() == 1 && q.pods().is_empty(),
        "half-made state"
    );
}

/// Three nodes, two pods each; `setup` wires the nodes' pod CIDRs together.
fn cross_node(mtu: u32, setup: impl Fn(&Topology, &[Subnet])) {
    let topo = Topology::new(3, &bins::workspace_bin("podlet-test-workload")).unwrap();
    let cidrs: Vec<Subnet> = (0..3)
        .map(|i| Subnet::parse(&format!("10.244.{i}.0/24")).unwrap())
        .collect();
    let nodes: Vec<Podlet> = topo
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let p = Podlet::new(Some(n.netns()));
            p.network(&format!("10.244.{i}.0/24"), mtu);
            p
        })
        .collect();
    let mut ips = Vec::new();
    for (i, p) in nodes.iter().enumerate() {
        for j in 0..2 {
            let ip = p.pod(&format!("pod{i}{j}"));
            assert!(
                cidrs[i].contains(ip.parse().unwrap()),
                "{ip} outside {:?}",
                cidrs[i]
            );
            ips.push((i, format!("pod{i}{j}"), ip));
        }
    }
    setup(&topo, &cidrs);

    // ICMP from a container in pod00 to every other pod (same node and across nodes).
    let script: String = ips[1..]
        .iter()
        .map(|(_, _, ip)| {
            format!("ping -c 1 -W 2 {ip} >/dev/null && echo ok {ip} || echo FAIL {ip}; ")
        })
        .collect();
    let out = nodes[0].ok(&[
        "run", "--rm", "--pod", "pod00", "busybox", "sh", "-c", &script,
    ]);
    for (_, name, ip) in &ips[1..] {
        assert!(
            out.contains(&format!("ok {ip}")),
            "pod00 → {name} ({ip}): {out}"
        );
    }
    // TCP: servers in a pod on node 0 (same node as the client) and on node 2.
    for (node, pod, ip) in [&ips[1], &ips[5]] {
        nodes[*node].ok(&[
            "run",
            "-d",
            "--pod",
            pod,
            "--name",
            &format!("srv-{pod}"),
            "busybox",
            "sh",
            "-c",
            &format!("echo tcp-from-{pod} | nc -l -p 7000"),
        ]);
        let out = nodes[0].ok(&[
            "run",
            "--rm",
            "--pod",
            "pod00",
            "busybox",
            "sh",
            "-c",
            &format!("for i in $(seq 50); do nc {ip} 7000 && exit 0; sleep 0.1; done; exit 1"),
        ]);
        assert_eq!(out.trim(), format!("tcp-from-{pod}"));
    }
    // And back: a pod on node 1 reaches node 0's pod (routes in both directions).
    let out = nodes[1].ok(&[
        "run", "--rm", "--pod", "pod10", "busybox", "ping", "-c", "1", "-W", "2", &ips[0].2,
    ]);
    assert!(out.contains("1 packets received"), "{out}");

    // Removing the pods releases every address and leaves no veth on the nodes.
    for (i, p) in nodes.iter().enumerate() {
        p.ok(&[
            "pod",
            "rm",
            "--force",
            &format!("pod{i}0"),
            &format!("pod{i}1"),
        ]);
        assert_eq!(p.ipam_files(), 0, "node {i} still holds addresses");
        // Only the node's own underlay link stays (retired pairs go with their reapers and
        // with the pods' namespaces, both asynchronously).
        let pod_links = || {
            let out = topo.nodes[i]
                .run("ip", &["-o", "link", "show", "type", "veth"])
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| !l.contains(" eth0@"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        let mut left = pod_links();
        for _ in 0..300 {
            if left.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
            left = pod_links();
        }
        assert!(left.is_empty(), "node {i}: {left:?}");
    }
    drop(nodes);
    drop(topo);
}

/// Runs `f` on a thread inside `ns` (how the agent calls the routing API in its node).
fn in_netns<T: Send + 'static>(ns: &NetnsHolder, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = fs::File::open(ns.netns_path()).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

fn peers(topo: &Topology, cidrs: &[Subnet], me: usize) -> Vec<PeerNode> {
    (0..topo.nodes.len())
        .filter(|&j| j != me)
        .map(|j| PeerNode {
            pod_cidr: cidrs[j],
            node_ip: topo.nodes[j].ip,
        })
        .collect()
}

#[test]
fn pods_reach_each_other_across_nodes_with_host_gw() {
    cross_node(1500, |topo, cidrs| {
        for (i, n) in topo.nodes.iter().enumerate() {
            let ps = peers(topo, cidrs, i);
            in_netns(n.netns(), move || routing::sync_host_gw(&ps)).unwrap();
            // A second sync is a no-op; the routes carry podlet's protocol number.
            let ps = peers(topo, cidrs, i);
            in_netns(n.netns(), move || routing::sync_host_gw(&ps)).unwrap();
            let r = n.run("ip", &["route", "show", "proto", "157"]).unwrap();
            let r = String::from_utf8_lossy(&r.stdout);
            assert_eq!(r.lines().count(), 2, "node{i}: {r}");
        }
    });
}

#[test]
fn pods_reach_each_other_across_nodes_with_vxlan() {
    cross_node(1450, |topo, cidrs| {
        for (i, n) in topo.nodes.iter().enumerate() {
            let cfg = VxlanConfig {
                device: "podlet.vxlan".into(),
                vni: 42,
                port: 4789,
                local_ip: n.ip,
                local_pod_cidr: cidrs[i],
                mtu: Some(1450),
            };
            let ps = peers(topo, cidrs, i);
            in_netns(n.netns(), move || {
                routing::ensure_vxlan(&cfg)?;
                routing::sync_vxlan_peers(&cfg, &ps)
            })
            .unwrap();
            // No host-gw route: pod traffic to other nodes must go through the overlay.
            let r = n.run("ip", &["route", "show", "proto", "157"]).unwrap();
            let r = String::from_utf8_lossy(&r.stdout);
            assert!(
                r.lines()
                    .all(|l| l.contains("podlet.vxlan") && l.contains("onlink")),
                "{r}"
            );
        }
    });
}

#[test]
fn dropping_a_peer_removes_its_route() {
    let topo = Topology::new(2, &bins::workspace_bin("podlet-test-workload")).unwrap();
    let cidrs: Vec<Subnet> = (0..2)
        .map(|i| Subnet::parse(&format!("10.244.{i}.0/24")).unwrap())
        .collect();
    let n = &topo.nodes[0];
    let ps = peers(&topo, &cidrs, 0);
    in_netns(n.netns(), move || routing::sync_host_gw(&ps)).unwrap();
    let r = n.run("ip", &["route", "show", "proto", "157"]).unwrap();
    assert!(String::from_utf8_lossy(&r.stdout).contains("10.244.1.0/24 via 10.213.0.2"));
    // A route someone else added is left alone.
    n.run(
        "ip",
        &["route", "add", "10.250.0.0/24", "via", "10.213.0.2"],
    )
    .unwrap();
    in_netns(n.netns(), || routing::sync_host_gw(&[])).unwrap();
    let r = n.run("ip", &["route"]).unwrap();
    let r = String::from_utf8_lossy(&r.stdout);
    assert!(
        !r.contains("10.244.1.0/24") && r.contains("10.250.0.0/24"),
        "{r}"
    );
}
