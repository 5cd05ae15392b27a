//! Shared by `make bench-lb` and `make bench-dns`: a one-node cluster (release master and
//! agent in a node namespace) with a `client` pod and a `backend` pod, a small keep-alive HTTP
//! server running in the backend pod's network namespace, and a Service `lb` in `bench` whose
//! one endpoint is that server.
#![allow(dead_code)] // each bench takes a different part

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use crate::cluster_env::{wait_for, Cluster};
use serde_json::Value;

const PODS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: bench}
---
apiVersion: v1
kind: Pod
metadata: {name: backend, namespace: bench}
spec:
  nodeName: node0
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: busybox, imagePullPolicy: Never, command: ["sleep", "100000"]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: bench}
spec:
  nodeName: node0
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: busybox, imagePullPolicy: Never, command: ["sleep", "100000"]}
"#;

/// The cluster and what the benches need of it.
pub struct Env {
    /// The cluster (torn down on drop).
    pub cluster: Cluster,
    /// The backend pod's address.
    pub backend_ip: String,
    /// The Service's ClusterIP.
    pub cluster_ip: String,
    /// The client pod's container pid (its network namespace is the client's).
    pub client_pid: i64,
}

fn ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// Serves `GET` with a 13-byte body, keeping connections open unless the client asks to
/// close (a thread per connection).
fn serve(listener: TcpListener) {
    for conn in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let _ = conn.set_nodelay(true);
            let mut w = match conn.try_clone() {
                Ok(w) => w,
                Err(_) => return,
            };
            let mut r = BufReader::new(conn);
            loop {
                let mut close = false;
                let mut line = String::new();
                // The request line and headers, up to the empty line.
                loop {
                    line.clear();
                    match r.read_line(&mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    if line.to_ascii_lowercase().starts_with("connection: close") {
                        close = true;
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let resp: &[u8] = if close {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nConnection: close\r\n\r\nhello podlet\n"
                } else {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nhello podlet\n"
                };
                if w.write_all(resp).is_err() || close {
                    return;
                }
            }
        });
    }
}

/// Runs `f` on a thread inside the network namespace of process `pid`.
pub fn in_netns<T: Send + 'static>(pid: i64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).expect("the pod's namespace");
    std::thread::spawn(move || {
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("namespace thread")
}

/// `program args…` inside the network namespace of process `pid`.
pub fn netns_command(pid: i64, program: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/proc/{pid}/ns/net"))
        .arg("--")
        .arg(program)
        .args(args);
    cmd
}

/// Starts the cluster, the pods, the backend's server and the Service.
pub fn start() -> Env {
    let cluster = Cluster::new(1);
    cluster.apply(PODS);
    wait_for("backend and client Ready", Duration::from_secs(90), || {
        let all = cluster.kubectl_json(&["get", "pods", "-n", "bench", "-o", "json"])?;
        let items = all["items"].as_array()?;
        (items.len() == 2 && items.iter().all(ready)).then_some(())
    });
    let pod = |name: &str| {
        cluster
            .kubectl_json(&["get", "pod", "-n", "bench", name, "-o", "json"])
            .expect("pod")
    };
    let backend = pod("backend");
    let client = pod("client");
    let backend_ip = backend["status"]["podIP"].as_str().unwrap().to_string();
    let backend_pid = cluster.container_pid(0, &backend, "c");
    let client_pid = cluster.container_pid(0, &client, "c");
    // The server thread lives in the backend's namespace for the rest of the run.
    let ns = std::fs::File::open(format!("/proc/{backend_pid}/ns/net")).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        serve(TcpListener::bind("0.0.0.0:8080").unwrap());
    });
    // A Service without a selector and its EndpointSlice, written as a user would.
    cluster.apply(&format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: lb, namespace: bench}}
spec:
  ports: [{{name: http, port: 8080, targetPort: 8080}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: lb-1
  namespace: bench
  labels: {{kubernetes.io/service-name: lb}}
addressType: IPv4
ports: [{{name: http, port: 8080, protocol: TCP}}]
endpoints:
- addresses: ["{backend_ip}"]
  conditions: {{ready: true}}
"#
    ));
    let cluster_ip = cluster
        .kubectl_json(&["get", "svc", "-n", "bench", "lb", "-o", "json"])
        .unwrap()["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    let target = format!("{cluster_ip}:8080");
    wait_for("the ClusterIP answering", Duration::from_secs(30), || {
        let t = target.clone();
        in_netns(client_pid, move || {
            let mut s =
                TcpStream::connect_timeout(&t.parse().unwrap(), Duration::from_secs(1)).ok()?;
            s.write_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
                .ok()?;
            let mut out = String::new();
            std::io::Read::read_to_string(&mut s, &mut out).ok()?;
            out.contains("hello podlet").then_some(())
        })
    });
    Env {
        cluster,
        backend_ip,
        cluster_ip,
        client_pid,
    }
}

/// The CPU time (user + system, seconds) process `pid` has used.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat (11 and 12 after the command).
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}
