//! Multi-node tier: three node namespaces on an underlay bridge reach each other, and teardown
//! leaves nothing behind.

use std::path::Path;

use podlet_testkit::topology::Topology;

const WORKLOAD: &str = env!("CARGO_BIN_EXE_podlet-test-workload");

fn netns_inode(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|p| p.display().to_string())
}

#[test]
fn three_nodes_ping_each_other_and_teardown_is_complete() {
    let host_links_before: Vec<_> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let topo = Topology::new(3, Path::new(WORKLOAD)).expect("build topology");
    let host_ns = netns_inode(std::process::id()).unwrap();
    let pids = topo.pids();
    let mut state_dirs = Vec::new();
    for n in &topo.nodes {
        assert_ne!(
            netns_inode(n.netns().pid()).unwrap(),
            host_ns,
            "{} shares the host netns",
            n.name
        );
        assert!(n.state_dir().is_dir());
        state_dirs.push(n.state_dir().to_path_buf());
    }
    for a in &topo.nodes {
        for b in &topo.nodes {
            if a.name == b.name {
                continue;
            }
            let out = a
                .run(
                    "busybox",
                    &["ping", "-c", "1", "-W", "2", &b.ip.to_string()],
                )
                .unwrap_or_else(|e| panic!("{} cannot reach {}: {e}", a.name, b.name));
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("1 packets received"), "{text}");
        }
    }
    // An address no node has gets no answer: the pings above are real.
    assert!(topo.nodes[0]
        .run("busybox", &["ping", "-c", "1", "-W", "1", "10.213.0.77"])
        .is_err());
    drop(topo);
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists() || netns_inode(pid).is_none(),
            "holder {pid} still alive"
        );
    }
    for d in state_dirs {
        assert!(!d.exists(), "state dir {} left behind", d.display());
    }
    let host_links_after: Vec<_> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        host_links_before, host_links_after,
        "the host's links changed"
    );
}
