//! Host tier: podlet's cgroup root resolves under the cgroup this test process started in, in
//! every hierarchy, never at a hierarchy root — and cgroups made through it really land there.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use podlet_runtime::cgroups::{CgroupRoot, CgroupVersion, HierarchyRoot};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_podlet-test-workload");

/// The test's own cgroup per hierarchy, read independently of podlet's parser.
fn own_cgroups() -> Vec<(String, String)> {
    fs::read_to_string("/proc/self/cgroup")
        .unwrap()
        .lines()
        .map(|l| {
            let mut p = l.splitn(3, ':');
            let (_, ctrl, path) = (p.next().unwrap(), p.next().unwrap(), p.next().unwrap());
            (ctrl.to_string(), path.to_string())
        })
        .collect()
}

#[test]
fn default_root_is_below_own_cgroup_in_every_hierarchy() {
    let root = CgroupRoot::discover(None).unwrap();
    assert!(!root.hierarchies.is_empty());
    for (ctrl, path) in own_cgroups() {
        let found = root.hierarchies.iter().find(|h| {
            if ctrl.is_empty() {
                h.version == CgroupVersion::V2
            } else {
                h.controllers.join(",") == ctrl
            }
        });
        let Some(h) = found else {
            // A v2 line without a mounted cgroup2 is the only thing allowed to be missing.
            assert!(ctrl.is_empty(), "hierarchy {ctrl} has no podlet root");
            continue;
        };
        assert_eq!(h.own_cgroup, PathBuf::from(&path));
        assert!(
            h.root_cgroup.starts_with(&path) && h.root_cgroup.as_path() != Path::new(&path),
            "{h:?}"
        );
        assert!(
            h.root_dir.starts_with(&h.own_dir) && h.root_dir != h.own_dir,
            "{h:?}"
        );
        assert_ne!(
            h.root_dir, h.mount_point,
            "podlet's root is a hierarchy root: {h:?}"
        );
        assert!(
            h.own_dir.is_dir(),
            "own cgroup dir {} does not exist",
            h.own_dir.display()
        );
    }
}

/// Creates a cgroup through podlet, moves a real process into it, checks where it landed.
fn place_process(h: &HierarchyRoot) {
    // An absolute cgroupsPath, as bundles write it, must still land below podlet's root.
    let dir = h.container_dir("/escape-attempt/ctr").unwrap();
    assert!(dir.starts_with(&h.root_dir));
    assert!(!h.mount_point.join("escape-attempt").exists());
    h.create_dir(&dir).unwrap();
    let mut child = Command::new(WORKLOAD).arg("sleep").spawn().unwrap();
    let result = std::panic::catch_unwind(|| {
        fs::write(dir.join("cgroup.procs"), child.id().to_string()).unwrap();
        let membership = fs::read_to_string(format!("/proc/{}/cgroup", child.id())).unwrap();
        let expected = h.root_cgroup.join("escape-attempt/ctr");
        let line = membership
            .lines()
            .find(|l| {
                let ctrl = l.split(':').nth(1).unwrap_or("");
                if h.controllers.is_empty() {
                    ctrl.is_empty()
                } else {
                    ctrl == h.controllers.join(",")
                }
            })
            .unwrap()
            .to_string();
        assert!(
            line.ends_with(&format!(":{}", expected.display())),
            "{line} vs {}",
            expected.display()
        );
    });
    // Move the process back out before removing its cgroup, whatever happened.
    let _ = fs::write(h.own_dir.join("cgroup.procs"), child.id().to_string());
    let _ = child.kill();
    let _ = child.wait();
    h.remove_dir(&dir).unwrap();
    assert!(
        !h.root_dir.exists(),
        "podlet root {} not removed",
        h.root_dir.display()
    );
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

#[test]
fn cgroups_created_through_podlet_land_below_own_cgroup() {
    let name = format!("podlet-test-{}", std::process::id());
    let root = CgroupRoot::discover(Some(Path::new(&name))).unwrap();
    // cgroup2 (no controllers on this host) and the v1 memory hierarchy, which holds the
    // machine's own supervisor cgroup: the one the rule protects.
    let mut tried = 0;
    if let Some(v2) = root.unified() {
        place_process(v2);
        tried += 1;
    }
    if let Some(mem) = root.v1_controller("memory") {
        place_process(mem);
        tried += 1;
    }
    assert!(tried > 0, "no cgroup hierarchy to test on");
}

#[test]
fn roots_outside_own_subtree_are_refused() {
    for bad in ["/", "..", "../sibling", "a/../../b", "."] {
        let err = CgroupRoot::discover(Some(Path::new(bad))).expect_err(bad);
        assert!(!err.to_string().is_empty());
    }
    let root = CgroupRoot::discover(None).unwrap();
    for h in &root.hierarchies {
        assert!(h.create_dir(&h.mount_point).is_err() || h.mount_point == h.own_dir);
        assert!(h.create_dir(&h.own_dir).is_err());
        assert!(h.container_dir("../../x").is_err());
    }
}
