//! Services for real, in the multi-node tier (3 node agents, each in its own network
//! namespace): ClusterIP, NodePort and DNS names reach backends on every node through the
//! agents' userspace proxies (`sk_lookup` + Maglev) with no iptables or nftables rule; UDP
//! through the proxy and DNS over UDP work; flows spread evenly, a removed backend moves few
//! other flows, and a backend that goes unready or away gets no new connections.

#[path = "cluster_env.rs"]
mod cluster_env;
#[path = "master_env.rs"]
mod master_env;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use cluster_env::{text, wait_for, Cluster};
use serde_json::Value;

const APP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http, nodePort: 30080}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: demo}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: demo}
spec:
  type: NodePort
  selector: {echo: "yes"}
  ports: [{name: udp, port: 9000, targetPort: 9000, protocol: UDP, nodePort: 30090}]
"#;

fn web_pod(i: usize) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: web-{i}, namespace: demo, labels: {{app: web, echo: "{echo}"}}}}
spec:
  nodeName: node{i}
  hostname: web-{i}
  subdomain: db
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: busybox
    imagePullPolicy: Never
    command: ["sh", "-c", "mkdir -p /www && echo web-{i} > /www/index.html && touch /www/ready && exec httpd -f -p 8080 -h /www"]
    ports: [{{name: http, containerPort: 8080}}]
    readinessProbe:
      httpGet: {{path: /ready, port: 8080}}
      periodSeconds: 1
      failureThreshold: 1
---
apiVersion: v1
kind: Pod
metadata: {{name: client-{i}, namespace: demo}}
spec:
  nodeName: node{i}
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    command: ["sleep", "100000"]
"#,
        echo = if i == 0 { "yes" } else { "no" }
    )
}

fn ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn pod(c: &Cluster, name: &str) -> Value {
    c.kubectl_json(&["get", "pod", "-n", "demo", name, "-o", "json"])
        .unwrap_or_else(|| panic!("pod {name}"))
}

/// Runs `args` inside a pod's container (`podlet exec` on its node).
fn exec(c: &Cluster, p: &Value, container: &str, args: &[&str]) -> std::process::Output {
    let i = c.node_index(p);
    let uid = p["metadata"]["uid"].as_str().unwrap();
    let id = format!("k8s-{uid}.c.{container}.0");
    let mut all = vec!["exec", id.as_str()];
    all.extend(args);
    c.podlet(i, &all)
}

/// Runs `f` on a thread inside the network namespace of a pod's container.
fn in_pod_netns<T: Send + 'static>(
    c: &Cluster,
    p: &Value,
    container: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let pid = c.container_pid(c.node_index(p), p, container);
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// One HTTP/1.0 GET to `addr` (optionally from source port `from`); the body's first line.
fn get(addr: SocketAddr, from: Option<u16>) -> std::io::Result<String> {
    let mut s = match from {
        None => TcpStream::connect_timeout(&addr, Duration::from_secs(3))?,
        Some(port) => {
            // A fixed source port makes the flow, and so Maglev's choice, repeatable.
            let sock = nix::sys::socket::socket(
                nix::sys::socket::AddressFamily::Inet,
                nix::sys::socket::SockType::Stream,
                nix::sys::socket::SockFlag::SOCK_CLOEXEC,
                None,
            )?;
            nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::ReuseAddr, &true)?;
            let local = nix::sys::socket::SockaddrIn::new(0, 0, 0, 0, port);
            nix::sys::socket::bind(std::os::fd::AsRawFd::as_raw_fd(&sock), &local)?;
            let SocketAddr::V4(v4) = addr else {
                unreachable!()
            };
            nix::sys::socket::connect(
                std::os::fd::AsRawFd::as_raw_fd(&sock),
                &nix::sys::socket::SockaddrIn::from(v4),
            )?;
            TcpStream::from(sock)
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let body = out
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_string();
    Ok(body)
}

/// The endpoints of the `web` Service's EndpointSlice.
fn web_endpoints(c: &Cluster) -> Option<Vec<Value>> {
    let s = c.kubectl_json(&[
        "get",
        "endpointslices",
        "-n",
        "demo",
        "-l",
        "kubernetes.io/service-name=web",
        "-o",
        "json",
    ])?;
    s["items"][0]["endpoints"].as_array().cloned()
}

fn rules(c: &Cluster, i: usize) -> (String, String) {
    let run = |prog: &str, args: &[&str]| {
        let out = c.topo.nodes[i]
            .netns()
            .command(prog, args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{prog}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    (run("iptables-save", &[]), run("nft", &["list", "ruleset"]))
}

fn host_rules() -> (String, String) {
    let run = |prog: &str, args: &[&str]| {
        let out = Command::new(prog).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    (run("iptables-save", &[]), run("nft", &["list", "ruleset"]))
}

/// How many of `n` requests from `client`'s namespace each backend answered.
fn spread(c: &Cluster, client: &Value, vip: SocketAddr, n: usize) -> HashMap<String, usize> {
    in_pod_netns(c, client, "c", move || {
        let mut counts = HashMap::new();
        for _ in 0..n {
            let who = get(vip, None).expect("a request through the ClusterIP");
            *counts.entry(who).or_insert(0) += 1;
        }
        counts
    })
}

#[test]
fn services_reach_backends_on_every_node_by_cluster_ip_dns_and_node_port() {
    let host_before = host_rules();
    let c = Cluster::new(3);
    let before: Vec<(String, String)> = (0..3).map(|i| rules(&c, i)).collect();
    c.apply(APP);
    for i in 0..3 {
        c.apply(&web_pod(i));
    }
    wait_for(
        "every web and client pod Ready",
        Duration::from_secs(90),
        || {
            let all = c.kubectl_json(&["get", "pods", "-n", "demo", "-o", "json"])?;
            let items = all["items"].as_array()?;
            (items.len() == 6 && items.iter().all(ready)).then_some(())
        },
    );
    let svc = c
        .kubectl_json(&["get", "svc", "-n", "demo", "web", "-o", "json"])
        .unwrap();
    let cluster_ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    let vip: SocketAddr = format!("{cluster_ip}:80").parse().unwrap();
    wait_for("3 ready endpoints", Duration::from_secs(30), || {
        let eps = web_endpoints(&c)?;
        (eps.len() == 3 && eps.iter().all(|e| e["conditions"]["ready"] == true)).then_some(())
    });
    let clients: Vec<Value> = (0..3).map(|i| pod(&c, &format!("client-{i}"))).collect();

    // By ClusterIP, by every DNS spelling (resolv.conf's search path, the agent's DNS over
    // UDP), from a pod on every node.
    for client in &clients {
        for url in [
            format!("http://{cluster_ip}/index.html"),
            "http://web/index.html".to_string(),
            "http://web.demo/index.html".to_string(),
            "http://web.demo.svc.cluster.local/index.html".to_string(),
        ] {
            // (Debian's static busybox wget crashes with -T: no timeout flag.)
            let got = wait_for(
                &format!("{url} from {}", client["metadata"]["name"]),
                Duration::from_secs(20),
                || {
                    let out = exec(&c, client, "c", &["wget", "-q", "-O", "-", &url]);
                    let body = String::from_utf8_lossy(&out.stdout).trim().to_string();
                    if !out.status.success() {
                        eprintln!("wget {url}: {}", text(&out));
                    }
                    out.status.success().then_some(body)
                },
            );
            assert!(got.starts_with("web-"), "{url}: {got:?}");
        }
        let ns = exec(&c, client, "c", &["nslookup", "web.demo.svc.cluster.local"]);
        assert!(
            text(&ns).contains(&cluster_ip),
            "nslookup from {}: {}",
            client["metadata"]["name"],
            text(&ns)
        );
        let resolv = exec(&c, client, "c", &["cat", "/etc/resolv.conf"]);
        assert!(
            text(&resolv).contains("nameserver 10.43.0.10")
                && text(&resolv)
                    .contains("search demo.svc.cluster.local svc.cluster.local cluster.local")
                && text(&resolv).contains("ndots:5"),
            "{}",
            text(&resolv)
        );
        let env = exec(&c, client, "c", &["env"]);
        assert!(
            text(&env).contains(&format!("WEB_SERVICE_HOST={cluster_ip}")),
            "{}",
            text(&env)
        );
        assert!(
            text(&env).contains("KUBERNETES_SERVICE_HOST=10.43.0.1"),
            "{}",
            text(&env)
        );
    }
    // A headless Service: its name resolves to every ready pod, each pod by its hostname.
    let web_ips: Vec<String> = (0..3)
        .map(|i| {
            pod(&c, &format!("web-{i}"))["status"]["podIP"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let headless = exec(
        &c,
        &clients[0],
        "c",
        &["nslookup", "db.demo.svc.cluster.local"],
    );
    for ip in &web_ips {
        assert!(
            text(&headless).contains(ip.as_str()),
            "{ip}: {}",
            text(&headless)
        );
    }
    let one = exec(
        &c,
        &clients[1],
        "c",
        &["nslookup", "web-2.db.demo.svc.cluster.local"],
    );
    assert!(text(&one).contains(web_ips[2].as_str()), "{}", text(&one));
    // The `kubernetes` Service reaches the master's API port from a pod.
    in_pod_netns(&c, &clients[2], "c", || {
        TcpStream::connect_timeout(&"10.43.0.1:443".parse().unwrap(), Duration::from_secs(3))
            .expect("kubernetes.default reaches the master");
    });

    // NodePort on every node's address, from every node.
    for from in 0..3 {
        for to in 0..3 {
            let url = format!("http://{}:30080/index.html", c.topo.nodes[to].ip);
            let body = c
                .fetch(from, &url)
                .unwrap_or_else(|| panic!("{url} from node{from}\n{}", c.logs()));
            assert!(body.trim().starts_with("web-"), "{url}: {body}");
        }
    }

    // 3,000 connections spread within ±10 % per backend.
    let counts = spread(&c, &clients[0], vip, 3000);
    assert_eq!(counts.len(), 3, "{counts:?}");
    for (who, n) in &counts {
        assert!(
            (900..=1100).contains(n),
            "{who} got {n} of 3000: {counts:?}"
        );
    }

    eprintln!("spread: {counts:?}");
    // UDP through the proxy: an echo server in web-0's namespace; the reply comes from the
    // ClusterIP and port the client sent to.
    let echo_ip = c
        .kubectl_json(&["get", "svc", "-n", "demo", "echo", "-o", "json"])
        .unwrap()["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    let web0 = pod(&c, "web-0");
    let server = {
        let pid = c.container_pid(0, &web0, "web");
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
        std::thread::spawn(move || {
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let s = UdpSocket::bind("0.0.0.0:9000").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut buf = [0u8; 512];
            for _ in 0..20 {
                let Ok((n, peer)) = s.recv_from(&mut buf) else {
                    return;
                };
                let mut reply = b"echo:".to_vec();
                reply.extend_from_slice(&buf[..n]);
                s.send_to(&reply, peer).unwrap();
            }
        })
    };
    let echo: SocketAddr = format!("{echo_ip}:9000").parse().unwrap();
    let (reply, from) = in_pod_netns(&c, &clients[1], "c", move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut buf = [0u8; 512];
        for _ in 0..20 {
            s.send_to(b"ping", echo).unwrap();
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                return (String::from_utf8_lossy(&buf[..n]).into_owned(), from);
            }
        }
        panic!("no UDP echo through {echo}");
    });
    assert_eq!(reply, "echo:ping");
    assert_eq!(from, echo, "the reply leaves from the ClusterIP");
    // The UDP NodePort, from another node and from the node itself with a client bound to
    // 127.0.0.1 and connected to the node's address: the reply must come from that address
    // (a connected socket drops anything else).
    let node0: SocketAddr = format!("{}:30090", c.topo.nodes[0].ip).parse().unwrap();
    for (from_node, bind) in [(2, "0.0.0.0:0"), (0, "127.0.0.1:0")] {
        let ns = std::fs::File::open(c.topo.nodes[from_node].netns().netns_path()).unwrap();
        let reply = std::thread::spawn(move || {
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let s = UdpSocket::bind(bind).unwrap();
            s.connect(node0).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            let mut buf = [0u8; 512];
            for _ in 0..10 {
                s.send(b"np").unwrap();
                if let Ok(n) = s.recv(&mut buf) {
                    return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
            }
            None
        })
        .join()
        .unwrap();
        assert_eq!(
            reply.as_deref(),
            Some("echo:np"),
            "UDP NodePort {node0} from node{from_node} bound to {bind}"
        );
    }
    drop(server);

    // Maglev: removing one of 3 backends moves few flows that were not on it. Fixed source
    // ports make each flow repeatable.
    let ports: Vec<u16> = (41_000..41_600).collect();
    let flows = |c: &Cluster| -> Vec<String> {
        let ports = ports.clone();
        in_pod_netns(c, &clients[1], "c", move || {
            ports
                .iter()
                .map(|p| {
                    // A port in TIME_WAIT from an earlier round may need a moment.
                    let mut last = None;
                    for _ in 0..5 {
                        match get(vip, Some(*p)) {
                            Ok(b) => return b,
                            Err(e) => last = Some(e),
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    panic!("flow from port {p}: {last:?}")
                })
                .collect()
        })
    };
    let first = flows(&c);
    // web-2 goes unready (its readiness file removed): within a second of its endpoint
    // turning unready, no new connection reaches it.
    let web2 = pod(&c, "web-2");
    let out = exec(&c, &web2, "web", &["rm", "/www/ready"]);
    assert!(out.status.success(), "{}", text(&out));
    wait_for("web-2's endpoint unready", Duration::from_secs(20), || {
        let eps = web_endpoints(&c)?;
        eps.iter()
            .any(|e| e["targetRef"]["name"] == "web-2" && e["conditions"]["ready"] == false)
            .then_some(())
    });
    let seen = Instant::now();
    std::thread::sleep(Duration::from_secs(1).saturating_sub(seen.elapsed()));
    let after_unready = spread(&c, &clients[2], vip, 200);
    assert!(!after_unready.contains_key("web-2"), "{after_unready:?}");
    let second = flows(&c);
    let kept: Vec<(&String, &String)> = first
        .iter()
        .zip(&second)
        .filter(|(a, _)| a.as_str() != "web-2")
        .collect();
    let moved = kept.iter().filter(|(a, b)| a != b).count();
    assert!(
        moved * 100 <= kept.len() * 34,
        "{moved} of {} flows not on web-2 moved",
        kept.len()
    );
    eprintln!("maglev: {moved} of {} flows not on web-2 moved", kept.len());
    assert!(second.iter().all(|b| b != "web-2"));

    // Scaled down: web-1 deleted; its endpoint goes, and so do its new connections.
    c.kubectl_ok(&["delete", "pod", "-n", "demo", "web-1", "--wait=false"]);
    wait_for(
        "web-1 gone from the endpoints",
        Duration::from_secs(30),
        || {
            let eps = web_endpoints(&c)?;
            (!eps.iter().any(|e| e["targetRef"]["name"] == "web-1")).then_some(())
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    let after_delete = spread(&c, &clients[0], vip, 100);
    assert_eq!(
        after_delete.keys().collect::<Vec<_>>(),
        vec!["web-0"],
        "{after_delete:?}"
    );

    // No NAT rule anywhere: every node's rules and the host's are as they were.
    for (i, b) in before.iter().enumerate() {
        assert_eq!(
            &rules(&c, i),
            b,
            "node{i}'s iptables/nftables rules changed"
        );
    }
    assert_eq!(host_rules(), host_before, "the host's rules changed");
}
