//! Reference test: for the same network configuration, `podlet-cni` and Debian's
//! containernetworking-plugins `bridge` + `host-local` (1.1.1; CNI spec up to 1.0.0, so the
//! config says 1.0.0) give the same ADD result (interfaces, IPs, routes), leave the same
//! kernel state (addresses, MTU, MAC, routes in the pod; gateway address, hairpin, bridge
//! membership on the node), both pass CHECK, and both DELs release the address and the veth —
//! again, and with the namespace gone. Each plugin runs in its own node namespace.
//!
//! The reference plugins come from scripts/install-deps.sh; without them the test fails.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};
use support::{plugin, Netns};

const REFERENCE_DIR: &str = "/usr/lib/cni";

fn conf(kind: &str, data: &Path) -> Value {
    json!({
        "cniVersion": "1.0.0", "name": "refnet", "type": kind, "bridge": "rbr0",
        "isGateway": true, "mtu": 1400, "hairpinMode": true,
        "runtimeConfig": {"mac": "0a:58:0a:4d:00:09"},
        "ipam": {"type": "host-local",
                 "ranges": [[{"subnet": "10.77.0.0/24", "rangeStart": "10.77.0.10"}]],
                 "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.50.0/24", "gw": "10.77.0.5"}],
                 "dataDir": data},
    })
}

fn is_mac(s: &str) -> bool {
    s.len() == 17
        && s.split(':')
            .all(|p| p.len() == 2 && u8::from_str_radix(p, 16).is_ok())
}

/// What a user of either plugin can see, with the parts that are random by design (the host
/// veth's name and MACs the kernel picked) checked for shape and then blanked.
fn observe(kind: &str, exe: &Path, cni_path: &str) -> BTreeMap<&'static str, Value> {
    let data = tempfile::tempdir().unwrap();
    let node = Netns::new();
    let mut pod = Netns::new();
    let cfg = conf(kind, data.path());
    let netns = pod.path();
    let mut seen = BTreeMap::new();

    let (ok, mut r) = plugin(exe, cni_path, &node, "ADD", "ctr1", Some(&netns), &cfg);
    assert!(ok, "{kind} ADD: {r}");
    let original = r.clone();
    let ifs = r["interfaces"].as_array_mut().unwrap();
    assert_eq!(ifs.len(), 3, "{kind}: {ifs:?}");
    let host_veth = ifs[1]["name"].as_str().unwrap().to_string();
    // The reference names it veth + 8 random hex digits; podlet-cni plv + a hash of the
    // attachment (so it never takes one of the reference's links for a stale one of its own).
    assert!(
        (host_veth.starts_with("veth") || host_veth.starts_with("plv")) && host_veth.len() <= 15,
        "{kind}: {host_veth}"
    );
    for i in ifs.iter_mut() {
        assert!(is_mac(i["mac"].as_str().unwrap()), "{kind}: {i}");
    }
    ifs[0]["mac"] = json!("<bridge mac>");
    ifs[1]["mac"] = json!("<veth mac>");
    ifs[1]["name"] = json!("<host veth>");
    assert_eq!(ifs[2]["sandbox"], json!(netns), "{kind}");
    ifs[2]["sandbox"] = json!("<netns>");
    seen.insert("add result", r.clone());

    // Kernel state inside the pod.
    let link = pod.text(&["ip", "-o", "link", "show", "eth0"]);
    seen.insert("pod eth0 mtu", json!(link.contains("mtu 1400")));
    seen.insert("pod eth0 mac", json!(link.contains("0a:58:0a:4d:00:09")));
    seen.insert(
        "pod eth0 addr",
        json!(pod
            .text(&["ip", "-4", "-o", "addr", "show", "eth0"])
            .split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .map(str::to_string)),
    );
    let mut routes: Vec<String> = pod
        .text(&["ip", "-4", "route"])
        .lines()
        .map(|l| l.trim().to_string())
        .collect();
    routes.sort();
    seen.insert("pod routes", json!(routes));

    // Kernel state on the node.
    let br = node.text(&["ip", "-4", "-o", "addr", "show", "rbr0"]);
    seen.insert("bridge addr", json!(br.contains("inet 10.77.0.1/24")));
    let veth = node.text(&["ip", "-d", "-o", "link", "show", &host_veth]);
    seen.insert("veth on bridge", json!(veth.contains("master rbr0")));
    seen.insert("veth hairpin", json!(veth.contains("hairpin on")));
    seen.insert(
        "node forwarding",
        json!(node.text(&["cat", "/proc/sys/net/ipv4/ip_forward"]).trim()),
    );

    let mut prev = cfg.clone();
    prev["prevResult"] = original;
    let (ok, r) = plugin(exe, cni_path, &node, "CHECK", "ctr1", Some(&netns), &prev);
    seen.insert("check", json!([ok, r]));
    // A previous result that does not match the container is refused by both.
    let mut wrong = prev.clone();
    wrong["prevResult"]["interfaces"][2]["mac"] = json!("0a:58:00:00:00:01");
    let (ok, _) = plugin(exe, cni_path, &node, "CHECK", "ctr1", Some(&netns), &wrong);
    seen.insert("check with a wrong MAC", json!(ok));

    let (ok, r) = plugin(exe, cni_path, &node, "DEL", "ctr1", Some(&netns), &prev);
    seen.insert("del", json!([ok, r]));
    seen.insert(
        "pod eth0 after del",
        json!(pod.text(&["ip", "-o", "link"]).contains("eth0")),
    );
    // podlet-cni retires the pair at once and destroys it in a detached reaper.
    let gone = support::eventually(|| {
        node.text(&["ip", "-o", "link", "show", "type", "veth"])
            .is_empty()
    });
    seen.insert("node veths gone after del", json!(gone));
    let held = std::fs::read_dir(data.path().join("refnet"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("10."))
                .count()
        })
        .unwrap_or(0);
    seen.insert("addresses held after del", json!(held));
    let (ok, _) = plugin(exe, cni_path, &node, "DEL", "ctr1", Some(&netns), &prev);
    seen.insert("second del", json!(ok));

    // The namespace gone before DEL: both still succeed and release the address.
    let (ok, r) = plugin(exe, cni_path, &node, "ADD", "ctr2", Some(&netns), &cfg);
    assert!(ok, "{kind} ADD 2: {r}");
    seen.insert("second add address", r["ips"][0]["address"].clone());
    pod.kill();
    let (ok, r) = plugin(exe, cni_path, &node, "DEL", "ctr2", Some(&netns), &cfg);
    seen.insert("del without netns", json!([ok, r]));
    let held = std::fs::read_dir(data.path().join("refnet"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("10."))
                .count()
        })
        .unwrap_or(0);
    seen.insert("addresses held at the end", json!(held));
    seen
}

#[test]
fn podlet_cni_agrees_with_the_reference_bridge_and_host_local() {
    let reference = Path::new(REFERENCE_DIR).join("bridge");
    assert!(
        reference.is_file(),
        "{} missing: scripts/install-deps.sh installs containernetworking-plugins",
        reference.display()
    );
    let theirs = observe("bridge", &reference, REFERENCE_DIR);
    let ours = observe(
        "podlet-cni",
        Path::new(env!("CARGO_BIN_EXE_podlet-cni")),
        "/nonexistent",
    );
    for (k, v) in &theirs {
        assert_eq!(
            ours.get(k),
            Some(v),
            "{k}: reference {v} vs podlet-cni {:?}",
            ours.get(k)
        );
    }
    assert_eq!(ours.len(), theirs.len());
}
