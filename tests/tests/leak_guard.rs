//! The leak guard finds what a test leaves behind: real processes and real cgroups.

use std::path::Path;
use std::process::Command;

use podlet_runtime::cgroups::CgroupRoot;
use podlet_testkit::leaks::{Snapshot, RUN_TOKEN_VAR};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_podlet-test-workload");

#[test]
fn guard_reports_a_leaked_process_and_cgroup_then_clean() {
    let token = format!("leak-guard-self-test-{}", std::process::id());
    let before = Snapshot::take(&token);
    let mut child = Command::new(WORKLOAD)
        .arg("sleep")
        .env(RUN_TOKEN_VAR, &token)
        .spawn()
        .unwrap();
    let root = CgroupRoot::discover(Some(Path::new(&format!(
        "leak-guard-test-{}",
        std::process::id()
    ))))
    .unwrap();
    let v2 = root.unified().or_else(|| root.hierarchies.first()).unwrap();
    let dir = v2.container_dir("leaked").unwrap();
    v2.create_dir(&dir).unwrap();
    // Give /proc a moment to show the child's environment after exec.
    std::thread::sleep(std::time::Duration::from_millis(100));
    let leaks = before.leaks_since(&Snapshot::take(&token));
    let _ = child.kill();
    let _ = child.wait();
    v2.remove_dir(&dir).unwrap();
    assert!(
        leaks
            .iter()
            .any(|l| l.contains(&format!("process {}", child.id()))),
        "{leaks:?}"
    );
    assert!(
        leaks
            .iter()
            .any(|l| l.starts_with("cgroup ") && l.contains("leaked")),
        "{leaks:?}"
    );
    let after_cleanup = before.leaks_since(&Snapshot::take(&token));
    assert!(
        after_cleanup.is_empty(),
        "still reported after cleanup: {after_cleanup:?}"
    );
}
