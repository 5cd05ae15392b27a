//! Host tier: `podlet-cni` ADD/CHECK/DEL/GC for real — a "node" network namespace and pod
//! namespaces, all held by processes this test starts and kills (nothing in the host's
//! network namespace), and 100 concurrent ADDs that get 100 distinct addresses.

mod support;

use std::path::Path;

use serde_json::{json, Value};
use support::Netns;

fn conf(data: &Path) -> Value {
    json!({
        "cniVersion": "1.1.0", "name": "podnet", "type": "podlet-cni", "bridge": "pbr0",
        "isGateway": true, "mtu": 1400,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.77.0.0/24"}]],
                 "routes": [{"dst": "0.0.0.0/0"}], "dataDir": data},
    })
}

/// Runs podlet-cni inside `node`, for `cmd`, with `config` on stdin.
fn cni(node: &Netns, cmd: &str, id: &str, pod: Option<&Path>, config: &Value) -> (bool, Value) {
    let exe = Path::new(env!("CARGO_BIN_EXE_podlet-cni"));
    support::plugin(exe, "/nonexistent", node, cmd, id, pod, config)
}

#[test]
fn add_check_del_in_real_namespaces() {
    let data = tempfile::tempdir().unwrap();
    let node = Netns::new();
    let pod = Netns::new();
    let cfg = conf(data.path());
    let (ok, r) = cni(&node, "ADD", "pod-a", Some(&pod.path()), &cfg);
    assert!(ok, "{r}");
    assert_eq!(r["cniVersion"], "1.1.0");
    assert_eq!(r["ips"][0]["address"], "10.77.0.2/24");
    assert_eq!(r["ips"][0]["gateway"], "10.77.0.1");
    assert_eq!(r["interfaces"][2]["name"], "eth0");
    // The pod sees eth0 with its address and MTU and a default route; it reaches the gateway.
    let addr =
        String::from_utf8_lossy(&pod.run(&["ip", "-4", "addr", "show", "eth0"]).stdout).to_string();
    assert!(
        addr.contains("10.77.0.2/24") && addr.contains("mtu 1400"),
        "{addr}"
    );
    let routes = String::from_utf8_lossy(&pod.run(&["ip", "route"]).stdout).to_string();
    assert!(routes.contains("default via 10.77.0.1"), "{routes}");
    let ping = pod.run(&["busybox", "ping", "-c", "1", "-W", "2", "10.77.0.1"]);
    assert!(
        ping.status.success(),
        "{}",
        String::from_utf8_lossy(&ping.stdout)
    );
    let (ok, r) = cni(&node, "CHECK", "pod-a", Some(&pod.path()), &cfg);
    assert!(ok, "{r}");
    // DEL removes the interface and the address; a second DEL (and one without the
    // namespace) still succeeds.
    let (ok, r) = cni(&node, "DEL", "pod-a", Some(&pod.path()), &cfg);
    assert!(ok, "{r}");
    let links = String::from_utf8_lossy(&pod.run(&["ip", "link"]).stdout).to_string();
    assert!(!links.contains("eth0"), "{links}");
    let addrs = pod.text(&["ip", "-4", "addr"]);
    assert!(
        !addrs.contains("10.77.0.2"),
        "the address outlived DEL: {addrs}"
    );
    assert!(cni(&node, "DEL", "pod-a", Some(&pod.path()), &cfg).0);
    assert!(cni(&node, "DEL", "pod-a", None, &cfg).0);
    let held: Vec<_> = std::fs::read_dir(data.path().join("podnet"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("10."))
        .collect();
    assert!(held.is_empty(), "addresses left: {held:?}");
    let (ok, r) = cni(&node, "CHECK", "pod-a", Some(&pod.path()), &cfg);
    assert!(!ok && r["code"].as_u64().is_some(), "{r}");
}

#[test]
fn errors_use_the_spec_codes() {
    let data = tempfile::tempdir().unwrap();
    let node = Netns::new();
    let pod = Netns::new();
    let mut bad = conf(data.path());
    bad["cniVersion"] = json!("9.9.9");
    let (ok, r) = cni(&node, "ADD", "x", Some(&pod.path()), &bad);
    assert!(!ok && r["code"] == 1, "{r}");
    let mut bad = conf(data.path());
    bad["ipam"]["ranges"] = json!([[{"subnet": "10.0.0.0/40"}]]);
    let (ok, r) = cni(&node, "ADD", "x", Some(&pod.path()), &bad);
    assert!(
        !ok && r["code"] == 7 && r["details"].as_str().unwrap().contains("subnet"),
        "{r}"
    );
    let (ok, r) = cni(&node, "ADD", "x", None, &conf(data.path()));
    assert!(
        !ok && r["code"] == 4 && r["details"].as_str().unwrap().contains("CNI_NETNS"),
        "{r}"
    );
    let (ok, r) = cni(
        &node,
        "ADD",
        "x",
        Some(Path::new("/nonexistent/ns")),
        &conf(data.path()),
    );
    assert!(!ok && r["code"] == 3, "{r}");
    // Nothing was allocated by the failed ADDs.
    let held = std::fs::read_dir(data.path().join("podnet"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("10."))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(held, 0);
}

#[test]
fn a_hundred_concurrent_adds_get_distinct_addresses_and_dels_free_them() {
    let data = tempfile::tempdir().unwrap();
    let node = Netns::new();
    let pods: Vec<Netns> = (0..100).map(|_| Netns::new()).collect();
    let cfg = conf(data.path());
    let ips: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (node, cfg) = (&node, &cfg);
                s.spawn(move || {
                    let (ok, r) = cni(node, "ADD", &format!("pod-{i}"), Some(&p.path()), cfg);
                    assert!(ok, "ADD {i}: {r}");
                    r["ips"][0]["address"].as_str().unwrap().to_string()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let unique: std::collections::HashSet<&String> = ips.iter().collect();
    assert_eq!(unique.len(), 100, "duplicate addresses: {ips:?}");
    std::thread::scope(|s| {
        for (i, p) in pods.iter().enumerate() {
            let (node, cfg) = (&node, &cfg);
            s.spawn(move || assert!(cni(node, "DEL", &format!("pod-{i}"), Some(&p.path()), cfg).0));
        }
    });
    let held = std::fs::read_dir(data.path().join("podnet"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("10."))
        .count();
    assert_eq!(held, 0, "leaked allocations");
    // The pairs are retired at once and destroyed by detached reapers soon after.
    let veths = || node.text(&["ip", "-o", "link", "show", "type", "veth"]);
    assert!(
        support::eventually(|| veths().is_empty()),
        "veths left on the node: {}",
        veths()
    );
}
