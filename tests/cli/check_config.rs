//! `podlet check-config`: the real binary reports a cgroup root below the caller's own cgroup
//! and refuses roots that would leave it.

use std::process::Command;

fn podlet(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_podlet"))
        .args(args)
        .output()
        .expect("run podlet")
}

#[test]
fn json_report_places_every_cgroup_root_below_the_callers_cgroup() {
    let out = podlet(&["check-config", "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let hierarchies = doc["cgroupRoot"]["hierarchies"]
        .as_array()
        .expect("hierarchies");
    assert!(!hierarchies.is_empty());
    // The child inherits this test's cgroups, so its own_cgroup must equal ours.
    let ours = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    for h in hierarchies {
        let own = h["own_cgroup"].as_str().unwrap();
        let root = h["root_cgroup"].as_str().unwrap();
        let ctrls: Vec<&str> = h["controllers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        let line = format!(":{}:{}", ctrls.join(","), own);
        assert!(
            ours.lines().any(|l| l.ends_with(&line)),
            "{line} is not one of our cgroups:\n{ours}"
        );
        assert_eq!(root, format!("{}/podlet", own.trim_end_matches('/')));
        assert_ne!(h["root_dir"], h["mount_point"]);
    }
    let names: Vec<&str> = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for ns in [
        "mount", "pid", "uts", "ipc", "net", "user", "cgroup", "time",
    ] {
        assert!(
            names.contains(&format!("namespace: {ns}").as_str()),
            "{names:?}"
        );
    }
}

#[test]
fn a_root_outside_the_subtree_fails_with_a_clear_error() {
    let out = podlet(&["--cgroup-root", "/", "check-config"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("must lie strictly below podlet's own cgroup"),
        "{stdout}"
    );
    assert!(
        stderr.contains("required features missing: cgroup root"),
        "{stderr}"
    );
}

#[test]
fn unknown_flags_and_commands_are_rejected() {
    let out = podlet(&["check-config", "--format", "xml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("xml"));
    let out = podlet(&["no-such-command"]);
    assert_eq!(out.status.code(), Some(2));
}
