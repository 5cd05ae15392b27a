//! cgroup v2 tier: limits that the host cannot enforce (its cgroup2 has no controllers) are
//! set and enforced for real inside a VM (User-Mode Linux, or QEMU where UML cannot boot).

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use podlet_runtime::cgroups::{CgroupRoot, HierarchyRoot};
use podlet_testkit::vm::{self, Backend, VmConfig, VmError};

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
#[ignore = "runs inside the cgroup v2 VM; driven by memory_pids_and_cpu_limits_are_enforced"]
fn inside_vm_memory_pids_and_cpu_limits() {
    assert!(
        vm::in_vm(),
        "this test only makes sense inside the cgroup v2 VM"
    );
    let root = CgroupRoot::discover(None).expect("discover cgroup root");
    let v2 = root.unified().expect("cgroup2 mounted in the VM");
    assert!(v2.root_dir.starts_with(&v2.own_dir) && v2.root_dir != v2.own_dir);
    let dir = v2.container_dir("/limits-test").unwrap();
    v2.create_dir(&dir).unwrap();
    let _guard = CgroupGuard {
        hierarchy: v2,
        dir: dir.clone(),
    };
    fs::write(
        v2.root_dir.join("cgroup.subtree_control"),
        "+memory +pids +cpu",
    )
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

    // cpu.max: a process that would use a whole CPU for 1.5 s gets at most 10 % of it.
    fs::write(dir.join("cpu.max"), "10000 100000").unwrap();
    assert_eq!(
        fs::read_to_string(dir.join("cpu.max")).unwrap().trim(),
        "10000 100000"
    );
    let before = event_count(&dir, "cpu.stat", "usage_usec ");
    let wall = std::time::Instant::now();
    let spin = run_in_cgroup(&dir, &["spin", "1500"]);
    let wall_usec = wall.elapsed().as_micros() as u64;
    assert!(spin.status.success(), "spin failed: {spin:?}");
    let used = event_count(&dir, "cpu.stat", "usage_usec ") - before;
    assert!(
        event_count(&dir, "cpu.stat", "nr_throttled ") >= 1
            && event_count(&dir, "cpu.stat", "throttled_usec ") > 0,
        "cpu.max did not throttle: {}",
        fs::read_to_string(dir.join("cpu.stat")).unwrap_or_default()
    );
    assert!(
        used * 100 <= wall_usec * 30,
        "a 10 % quota used {used} us of CPU in {wall_usec} us"
    );
}

#[test]
fn memory_pids_and_cpu_limits_are_enforced() {
    let outcome = vm::run_test("inside_vm_memory_pids_and_cpu_limits", &VmConfig::default())
        .expect("the cgroup v2 VM must boot");
    assert!(
        outcome.success(),
        "test failed inside {} (status {}):\n{}",
        outcome.backend,
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
#[ignore = "runs inside the cgroup v2 VM; a deliberate failure for failures_inside_fail_the_host_test"]
fn inside_vm_deliberate_failure() {
    assert!(vm::in_vm());
    panic!("deliberate failure inside the VM");
}

#[test]
fn failures_inside_fail_the_host_test() {
    let outcome = vm::run_test("inside_vm_deliberate_failure", &VmConfig::default())
        .expect("the cgroup v2 VM must boot");
    assert!(
        !outcome.success(),
        "a failing test inside {} was reported as passing",
        outcome.backend
    );
    assert!(
        outcome.output.contains("deliberate failure inside the VM"),
        "{}",
        outcome.output
    );
}

#[test]
fn a_guest_that_does_not_boot_is_an_error_not_a_skip() {
    let backend = vm::selected_backend().expect("a VM backend");
    let missing = VmConfig {
        backend: Some(backend),
        uml_kernel: PathBuf::from("/nonexistent/linux.uml"),
        qemu: PathBuf::from("/nonexistent/qemu-system-x86_64"),
        ..VmConfig::default()
    };
    assert!(matches!(
        vm::run(Path::new("/bin/true"), &[], &missing),
        Err(VmError::Spawn { .. })
    ));
    // A kernel that starts but never reaches init (no such init) must not look like a pass.
    let no_init = VmConfig {
        backend: Some(backend),
        init_override: Some(PathBuf::from("/nonexistent-init")),
        timeout: Some(std::time::Duration::from_secs(if backend == Backend::Uml {
            60
        } else {
            180
        })),
        ..VmConfig::default()
    };
    let err =
        vm::run(Path::new("/bin/true"), &[], &no_init).expect_err("a guest without init must fail");
    assert!(matches!(err, VmError::NoBoot { .. }), "{err}");
}
