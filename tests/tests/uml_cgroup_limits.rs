//! cgroup v2 tier: limits that the host cannot enforce (its cgroup2 has no controllers) are
//! set and enforced for real inside User-Mode Linux.

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use podlet_runtime::cgroups::{CgroupRoot, HierarchyRoot};
use podlet_testkit::uml::{self, UmlConfig, UmlError};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_podlet-test-workload");

/// Runs the workload with `args` as a member of the cgroup at `dir`, joined before exec.
fn run_in_cgroup(dir: &Path, args: &[&str]) -> Output {
    let procs = fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.procs"))
        .expect("open cgroup.procs");
    let fd = procs.as_raw_fd();
    let mut cmd = Command::new(WORKLOAD);
    cmd.args(args);
    // SAFETY: the hook only calls write(2) on an fd opened before fork; no allocation.
    unsafe {
        cmd.pre_exec(move || {
            if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.output().expect("run workload")
}

fn event_count(dir: &Path, file: &str, key: &str) -> u64 {
    let text = fs::read_to_string(dir.join(file)).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

/// Removes the test's cgroups even when an assertion fails.
struct CgroupGuard<'a> {
    hierarchy: &'a HierarchyRoot,
    dir: PathBuf,
}

impl Drop for CgroupGuard<'_> {
    fn drop(&mut self) {
        let _ = self.hierarchy.remove_dir(&self.dir);
    }
}

#[test]
#[ignore = "runs inside User-Mode Linux; driven by uml_memory_and_pids_limits_are_enforced"]
fn inside_uml_memory_and_pids_limits() {
    assert!(
        uml::in_uml(),
        "this test only makes sense inside the UML tier"
    );
    let root = CgroupRoot::discover(None).expect("discover cgroup root");
    let v2 = root.unified().expect("cgroup2 mounted in UML");
    assert!(v2.root_dir.starts_with(&v2.own_dir) && v2.root_dir != v2.own_dir);
    let dir = v2.container_dir("/limits-test").unwrap();
    v2.create_dir(&dir).unwrap();
    let _guard = CgroupGuard {
        hierarchy: v2,
        dir: dir.clone(),
    };
    fs::write(v2.root_dir.join("cgroup.subtree_control"), "+memory +pids")
        .expect("enable controllers in podlet's root");
    fs::write(dir.join("memory.max"), (32u64 << 20).to_string()).unwrap();
    fs::write(dir.join("pids.max"), "16").unwrap();
    if dir.join("memory.swap.max").exists() {
        fs::write(dir.join("memory.swap.max"), "0").unwrap();
    }
    assert_eq!(
        fs::read_to_string(dir.join("memory.max")).unwrap().trim(),
        "33554432"
    );
    assert_eq!(
        fs::read_to_string(dir.join("pids.max")).unwrap().trim(),
        "16"
    );

    // Below the limit: the allocation completes.
    let small = run_in_cgroup(&dir, &["alloc", "8"]);
    assert!(
        small.status.success(),
        "8 MiB under a 32 MiB limit failed: {small:?}"
    );

    // Past the limit: the OOM killer ends the process with SIGKILL.
    let big = run_in_cgroup(&dir, &["alloc", "64"]);
    let printed = String::from_utf8_lossy(&big.stdout);
    assert_eq!(
        big.status.signal(),
        Some(libc::SIGKILL),
        "64 MiB allocation was not OOM-killed: {big:?}"
    );
    assert!(
        !printed.contains("done"),
        "allocation finished despite the limit: {printed}"
    );
    assert!(
        event_count(&dir, "memory.events", "oom_kill ") >= 1,
        "memory.events shows no oom_kill"
    );

    // Forking past 16 pids fails with EAGAIN.
    let forks = run_in_cgroup(&dir, &["fork", "32"]);
    let printed = String::from_utf8_lossy(&forks.stdout);
    assert_eq!(
        forks.status.code(),
        Some(3),
        "forking 32 under pids.max=16 did not fail: {printed}"
    );
    let forked: usize = printed
        .lines()
        .find_map(|l| {
            l.strip_prefix("forked ")
                .and_then(|r| r.split(' ').next())
                .and_then(|n| n.parse().ok())
        })
        .expect("fork count printed");
    assert!(
        forked <= 15,
        "forked {forked} children, more than pids.max allows"
    );
    assert!(
        event_count(&dir, "pids.events", "max ") >= 1,
        "pids.events shows no max event"
    );
}

#[test]
fn uml_memory_and_pids_limits_are_enforced() {
    let outcome = uml::run_test("inside_uml_memory_and_pids_limits", &UmlConfig::default())
        .expect("UML tier must boot");
    assert!(
        outcome.success(),
        "test failed inside UML (status {}):\n{}",
        outcome.status,
        outcome.output
    );
    assert!(
        outcome.output.contains("1 passed"),
        "inside test did not run:\n{}",
        outcome.output
    );
}

#[test]
#[ignore = "runs inside User-Mode Linux; a deliberate failure for uml_failures_inside_fail_the_host_test"]
fn inside_uml_deliberate_failure() {
    assert!(uml::in_uml());
    panic!("deliberate failure inside UML");
}

#[test]
fn uml_failures_inside_fail_the_host_test() {
    let outcome = uml::run_test("inside_uml_deliberate_failure", &UmlConfig::default())
        .expect("UML tier must boot");
    assert!(
        !outcome.success(),
        "a failing test inside UML was reported as passing"
    );
    assert!(
        outcome.output.contains("deliberate failure inside UML"),
        "{}",
        outcome.output
    );
}

#[test]
fn uml_that_does_not_boot_is_an_error_not_a_skip() {
    let missing = UmlConfig {
        kernel: PathBuf::from("/nonexistent/linux.uml"),
        ..UmlConfig::default()
    };
    assert!(matches!(
        uml::run(Path::new("/bin/true"), &[], &missing),
        Err(UmlError::Spawn { .. })
    ));
    // A kernel that starts but never reaches init (no such init) must not look like a pass.
    let no_init = UmlConfig {
        init_override: Some(PathBuf::from("/nonexistent-init")),
        timeout: std::time::Duration::from_secs(60),
        ..UmlConfig::default()
    };
    let err = uml::run(Path::new("/bin/true"), &[], &no_init)
        .expect_err("a guest without init must fail");
    assert!(matches!(err, UmlError::NoBoot { .. }), "{err}");
}
