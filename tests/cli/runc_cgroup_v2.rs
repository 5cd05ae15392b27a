//! cgroup v2 tier for the runtime: inside a VM with real cgroup v2 controllers (UML, or QEMU
//! where UML cannot boot), the
//! resources in a bundle become v2 files and are enforced, `update` changes them, and
//! `events --stats` reads them back. The host's cgroup2 has no controllers, so this cannot
//! run on the host itself.

#[path = "runc_env.rs"]
mod runc_env;

use std::fs;
use std::path::{Path, PathBuf};

use podlet_testkit::vm;
use runc_env::{stderr, stdout, Env};
use serde_json::{json, Value};

fn read(dir: &Path, file: &str) -> String {
    fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()))
        .trim()
        .to_string()
}

fn count(dir: &Path, file: &str, key: &str) -> u64 {
    read(dir, file)
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

/// The container's v2 cgroup directory, from its saved state.
fn cgroup_dir(env: &Env, id: &str) -> PathBuf {
    let st: Value =
        serde_json::from_slice(&fs::read(env.root().join(id).join("state.json")).unwrap()).unwrap();
    let dirs: Vec<PathBuf> = serde_json::from_value(st["cgroupDirs"].clone()).unwrap();
    dirs.into_iter()
        .find(|d| d.join("cgroup.controllers").exists())
        .expect("a cgroup v2 directory")
}

#[test]
#[ignore = "runs inside the cgroup v2 VM; driven by runtime_maps_and_enforces_v2_resources"]
fn inside_vm_runtime_v2_resources() {
    assert!(vm::in_vm(), "only meaningful inside the cgroup v2 VM");
    let mut env = Env::new();
    env.set_config(|c| {
        c["root"]["readonly"] = json!(false);
        c["linux"]["resources"] = json!({
            "memory": {"limit": 32 << 20, "swap": 32 << 20, "reservation": 8 << 20},
            "pids": {"limit": 16},
            "cpu": {"shares": 512, "quota": 50000, "period": 100000},
            "devices": [{"allow": false, "access": "rwm"}],
        });
    });
    env.set_args(&["sleep", "1000"]);
    let id = env.id("v2");
    let b = env.bundle().to_str().unwrap().to_string();
    let out = env.runc(&["create", "--bundle", &b, &id]);
    assert!(out.status.success(), "create: {}", stderr(&out));
    assert!(env.runc(&["start", &id]).status.success());
    let dir = cgroup_dir(&env, &id);

    // The mapping: OCI values → v2 files.
    assert_eq!(read(&dir, "memory.max"), (32u64 << 20).to_string());
    assert_eq!(read(&dir, "memory.low"), (8u64 << 20).to_string());
    assert_eq!(
        read(&dir, "memory.swap.max"),
        "0",
        "OCI swap is memory+swap"
    );
    assert_eq!(read(&dir, "pids.max"), "16");
    assert_eq!(read(&dir, "cpu.max"), "50000 100000");
    // runc's shares→weight conversion: 1 + (512-2)*9999/262142.
    assert_eq!(read(&dir, "cpu.weight"), "20");

    // Device rules become an eBPF filter on v2: default devices work, anything else is denied.
    // With CAP_MKNOD, only the filter stands between the process and a denied device.
    let out = env.runc(&[
        "exec",
        "--cap",
        "CAP_MKNOD",
        &id,
        "sh",
        "-c",
        "mknod /null2 c 1 3 && echo null-mknod-ok; mknod /mem2 c 1 1 && echo mem-mknod-ok; true",
    ]);
    let text = stdout(&out) + &stderr(&out);
    assert!(
        text.contains("null-mknod-ok"),
        "allowed device refused: {text}"
    );
    assert!(
        !text.contains("mem-mknod-ok"),
        "denied device created: {text}"
    );

    // Enforcement: a shell holding 64 MiB in a variable is OOM-killed under 32 MiB.
    let out = env.runc(&[
        "exec",
        &id,
        "sh",
        "-c",
        "x=$(head -c 67108864 /dev/zero | tr '\\0' a); echo survived",
    ]);
    assert!(
        !stdout(&out).contains("survived"),
        "64 MiB fit under a 32 MiB limit"
    );
    assert!(
        count(&dir, "memory.events", "oom_kill ") >= 1,
        "no oom_kill event"
    );

    // Forking past pids.max fails.
    let out = env.runc(&[
        "exec",
        &id,
        "sh",
        "-c",
        "n=0; for i in $(seq 1 40); do sleep 100 & n=$((n+1)); done; echo started=$n",
    ]);
    let text = stdout(&out) + &stderr(&out);
    assert!(
        text.contains("can't fork") || text.contains("Resource temporarily unavailable"),
        "40 forks under pids.max=16: {text}"
    );
    assert!(count(&dir, "pids.events", "max ") >= 1, "no pids max event");

    // update rewrites the v2 files; events --stats reads them back.
    let out = env.runc(&["update", "--memory", "48m", "--pids-limit", "100", &id]);
    assert!(out.status.success(), "update: {}", stderr(&out));
    assert_eq!(read(&dir, "memory.max"), (48u64 << 20).to_string());
    assert_eq!(read(&dir, "pids.max"), "100");
    let out = env.runc(&["delete", "--force", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!dir.exists(), "cgroup left behind");

    let (id2, _) = {
        env.set_args(&["sleep", "1000"]);
        let id2 = env.id("v2stats");
        let out = env.runc(&["run", "--detach", "--bundle", &b, &id2]);
        assert!(out.status.success(), "{}", stderr(&out));
        (id2, ())
    };
    let out = env.runc(&["events", "--stats", &id2]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ev: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ev["data"]["memory"]["usage"]["limit"], 32u64 << 20, "{ev}");
    assert!(
        ev["data"]["memory"]["usage"]["usage"].as_u64().unwrap() > 0,
        "{ev}"
    );
    assert_eq!(ev["data"]["pids"]["limit"], 16, "{ev}");
    assert!(env.runc(&["delete", "--force", &id2]).status.success());
    env.assert_nothing_left("cgroup v2 runtime");
}

#[test]
fn runtime_maps_and_enforces_v2_resources() {
    vm::assert_passes_inside("inside_vm_runtime_v2_resources");
}
