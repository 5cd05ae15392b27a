//! Host tier: the cgroup v2 device filter (eBPF) really decides which devices a process in the
//! cgroup may open. The host's cgroup2 has no controllers, but device programs attach to any
//! cgroup2 directory, so this runs for real here (below the test's own cgroup).

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

use oci_spec::runtime::LinuxDeviceCgroup;
use podlet_runtime::cgroups::{devices_bpf, CgroupRoot};

#[test]
fn the_filter_allows_listed_devices_and_denies_the_rest() {
    let rules = r#"[{"allow":false,"access":"rwm"},
            {"allow":true,"type":"c","major":1,"minor":3,"access":"rw"},
            {"allow":true,"type":"c","major":1,"minor":5,"access":"r"}]"#;
    let text = run_filtered(
        "listed",
        rules,
        "echo x > /dev/null && echo null-w; head -c1 /dev/zero >/dev/null && echo zero-r; \
         echo x > /dev/zero && echo zero-w; head -c1 /dev/urandom >/dev/null && echo urandom-r; true",
    );
    assert!(text.contains("null-w"), "{text}");
    assert!(text.contains("zero-r"), "{text}");
    assert!(
        !text.contains("zero-w"),
        "write to a read-only rule was allowed: {text}"
    );
    assert!(
        !text.contains("urandom-r"),
        "an unlisted device was allowed: {text}"
    );
    assert!(text.contains("Operation not permitted"), "{text}");
}

/// Runs `script` under busybox sh in a fresh cgroup2 directory carrying the filter for `rules`.
fn run_filtered(name: &str, rules: &str, script: &str) -> String {
    let root_name = format!("podlet-bpf-test-{}-{name}", std::process::id());
    let root = CgroupRoot::discover(Some(std::path::Path::new(&root_name))).unwrap();
    let v2 = root.unified().expect("cgroup2 is mounted").clone();
    let dir = v2.container_dir("dev-filter").unwrap();
    v2.create_dir(&dir).unwrap();
    struct Guard(podlet_runtime::cgroups::HierarchyRoot, std::path::PathBuf);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = self.0.remove_dir(&self.1);
        }
    }
    let _guard = Guard(v2.clone(), dir.clone());
    let rules: Vec<LinuxDeviceCgroup> = serde_json::from_str(rules).unwrap();
    devices_bpf::apply(&dir, &rules).expect("load and attach the device filter");
    // Applying again replaces the filter instead of stacking a second one.
    devices_bpf::apply(&dir, &rules).expect("replace the device filter");
    let procs = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.procs"))
        .unwrap();
    let fd = procs.as_raw_fd();
    let mut cmd = Command::new("/bin/busybox");
    cmd.args(["sh", "-c", script]);
    // SAFETY: the hook only calls write(2) on an fd opened before fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn a_rule_list_without_a_leading_deny_all_still_fails_closed() {
    // Only /dev/null is allowed; nothing says "deny the rest", and the rest is denied anyway.
    let text = run_filtered(
        "closed",
        r#"[{"allow":true,"type":"c","major":1,"minor":3,"access":"rwm"}]"#,
        "echo x > /dev/null && echo null-w; head -c1 /dev/zero >/dev/null && echo zero-r; true",
    );
    assert!(text.contains("null-w"), "{text}");
    assert!(
        !text.contains("zero-r"),
        "an unlisted device was allowed: {text}"
    );
    // An empty list allows nothing at all.
    let text = run_filtered("empty", "[]", "echo x > /dev/null && echo null-w; true");
    assert!(!text.contains("null-w"), "{text}");
}
