//! Host tier: the newer runtime-spec (1.2/1.3) fields and lifecycle corners `podlet-runc` must
//! handle as runc 1.3 does — recursive mount attributes, scheduling and memory settings read
//! back from inside the container, user namespaces with a read-only root and time offsets,
//! hook failures reported by exit code, and capability sets taken exactly as written.

#[path = "runc_env.rs"]
mod runc_env;

use std::fs;
use std::time::{Duration, Instant};

use runc_env::{stderr, stdout, Env};
use serde_json::{json, Value};

fn state(env: &Env, id: &str) -> Value {
    serde_json::from_slice(&env.runc(&["state", id]).stdout).unwrap_or(Value::Null)
}

fn wait_for(mut f: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out waiting for {what}");
}

/// Creates and starts `args` as a long-running container; returns its id.
fn started(env: &mut Env, name: &str, args: &[&str]) -> String {
    env.set_args(args);
    let id = env.id(name);
    let b = env.bundle().to_str().unwrap().to_string();
    let out = env.runc(&["create", "--bundle", &b, &id]);
    assert!(out.status.success(), "create: {}", stderr(&out));
    let out = env.runc(&["start", &id]);
    assert!(out.status.success(), "start: {}", stderr(&out));
    id
}

/// The per-mount options (mountinfo field 6) of the mount at `point`, from `text`.
fn mount_options<'a>(text: &'a str, point: &str) -> Vec<&'a str> {
    text.lines()
        .find(|l| l.split(' ').nth(4) == Some(point))
        .unwrap_or_else(|| panic!("{point} not mounted:\n{text}"))
        .split(' ')
        .nth(5)
        .unwrap()
        .split(',')
        .collect()
}

#[test]
fn recursive_mount_attributes_reach_submounts() {
    let mut env = Env::new();
    let tree = env.bundle().join("rootfs/mnt/a");
    env.set_config(|c| {
        let mounts = c["mounts"].as_array_mut().unwrap();
        // A tmpfs with another tmpfs below it, both inside the container's mount namespace;
        // the binds take that tree (through the rootfs path) to /data and /data2.
        mounts.push(json!({"destination": "/mnt/a", "type": "tmpfs", "source": "tmpfs"}));
        mounts.push(json!({"destination": "/mnt/a/b", "type": "tmpfs", "source": "tmpfs"}));
        mounts.push(json!({
            "destination": "/data", "type": "bind", "source": tree,
            "options": ["rbind", "rro", "rnosuid", "rnodev", "rnoexec", "rnoatime", "rnosymfollow"],
        }));
        // Plain `ro` only changes the top of a recursive bind (runc's rule too).
        mounts.push(json!({
            "destination": "/data2", "type": "bind", "source": tree, "options": ["rbind", "ro"],
        }));
    });
    let out = env.run(
        "rattr",
        &[
            "sh",
            "-c",
            "touch /data/b/x; echo deep=$?; touch /data2/b/x; echo plain=$?; \
             cat /proc/self/mountinfo",
        ],
    );
    let text = stdout(&out);
    assert!(out.status.success(), "{}{text}", stderr(&out));
    assert!(text.contains("deep=1"), "rro did not reach /data/b: {text}");
    assert!(
        stderr(&out).contains("Read-only file system"),
        "{}",
        stderr(&out)
    );
    assert!(
        text.contains("plain=0"),
        "plain ro reached the submount: {text}"
    );
    for point in ["/data", "/data/b"] {
        let opts = mount_options(&text, point);
        for want in ["ro", "nosuid", "nodev", "noexec", "noatime", "nosymfollow"] {
            assert!(opts.contains(&want), "{point} lacks {want}: {opts:?}");
        }
    }
    assert!(mount_options(&text, "/data2").contains(&"ro"));
    assert!(mount_options(&text, "/data2/b").contains(&"rw"));

    env.assert_nothing_left("recursive mount attributes");
}

/// Fields of `/proc/<pid>/stat` after the command name: index 0 is field 3 (state).
fn stat_fields(line: &str) -> Vec<String> {
    let (_, rest) = line.rsplit_once(')').expect("a stat line");
    rest.split_whitespace().map(str::to_string).collect()
}

#[test]
fn scheduler_io_priority_personality_and_memory_policy_apply() {
    let mut env = Env::new();
    env.set_config(|c| {
        c["process"]["scheduler"] = json!({"policy": "SCHED_BATCH", "nice": 7});
        c["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_BE", "priority": 6});
        c["linux"]["personality"] = json!({"domain": "LINUX32"});
        c["linux"]["memoryPolicy"] = json!({"mode": "MPOL_INTERLEAVE", "nodes": "0"});
    });
    let out = env.run(
        "sched",
        &[
            "sh",
            "-c",
            "cat /proc/$$/stat; ionice -p $$; uname -m; head -n1 /proc/$$/numa_maps",
        ],
    );
    let text = stdout(&out);
    assert!(out.status.success(), "{}{text}", stderr(&out));
    let lines: Vec<&str> = text.lines().collect();
    let stat = stat_fields(lines[0]);
    assert_eq!(stat[16], "7", "nice (field 19): {stat:?}");
    assert_eq!(stat[38], "3", "policy SCHED_BATCH (field 41): {stat:?}");
    assert_eq!(lines[1], "best-effort: prio 6", "{text}");
    assert_eq!(lines[2], "i686", "LINUX32 personality: {text}");
    assert!(lines[3].contains(" interleave:0"), "{text}");

    // A deadline policy without its times is refused when the container is made, by name.
    env.set_config(|c| {
        c["process"]["scheduler"] = json!({"policy": "SCHED_DEADLINE"});
    });
    let out = env.run("sched-bad", &["true"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("process.scheduler"),
        "{}",
        stderr(&out)
    );
    env.set_config(|c| {
        c["process"]["scheduler"] = json!({"policy": "SCHED_OTHER"});
        c["linux"]["memoryPolicy"] = json!({"mode": "MPOL_BIND", "nodes": "7"});
    });
    let out = env.run("mempolicy-bad", &["true"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("linux.memoryPolicy"),
        "{}",
        stderr(&out)
    );
    env.assert_nothing_left("scheduling settings");
}

#[test]
fn exec_cpu_affinity_applies_initial_then_final() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        eprintln!("skipped: one CPU, no affinity to choose");
        return;
    }
    let mut env = Env::new();
    let id = started(&mut env, "affinity", &["sleep", "1000"]);
    let base: Value = env.config()["process"].clone();
    let run = |env: &Env, affinity: Value| -> String {
        let out = exec_with_affinity(env, &base, &id, affinity);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out).split_whitespace().last().unwrap().to_string()
    };
    assert_eq!(run(&env, json!({"final": "1"})), "1");
    // With only an initial set, the process keeps it.
    assert_eq!(run(&env, json!({"initial": "0"})), "0");
    assert_eq!(run(&env, json!({"initial": "0", "final": "1"})), "1");
    // The container's own process is not affected.
    let pid = state(&env, &id)["pid"].as_i64().unwrap();
    let own = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        own.contains(&format!("Cpus_allowed_list:\t0-{}", cpus - 1)),
        "{own}"
    );
    let bad = exec_with_affinity(&env, &base, &id, json!({"final": "0-x"}));
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("execCPUAffinity"), "{}", stderr(&bad));
    assert!(env.runc(&["delete", "--force", &id]).status.success());
    env.assert_nothing_left("exec affinity");
}

/// `exec`s a `grep Cpus_allowed_list` process built on `base` with `affinity` into `id`.
fn exec_with_affinity(env: &Env, base: &Value, id: &str, affinity: Value) -> std::process::Output {
    let mut p = base.clone();
    p["args"] = json!(["grep", "Cpus_allowed_list", "/proc/self/status"]);
    p["execCPUAffinity"] = affinity;
    let path = env.dir.path().join("process.json");
    fs::write(&path, serde_json::to_vec(&p).unwrap()).unwrap();
    env.runc(&["exec", "--process", path.to_str().unwrap(), id])
}

#[test]
fn read_only_root_and_time_offsets_work_in_a_user_namespace() {
    let mut env = Env::new();
    env.user_namespaced();
    env.set_config(|c| {
        c["root"]["readonly"] = json!(true);
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "time"}));
        c["linux"]["timeOffsets"] = json!({
            "boottime": {"secs": 8640000, "nanosecs": 0},
            "monotonic": {"secs": 8640000, "nanosecs": 0},
        });
    });
    let out = env.run(
        "userns-ro",
        &["sh", "-c", "touch /x; echo touch=$?; cat /proc/uptime"],
    );
    let text = stdout(&out);
    assert!(out.status.success(), "{}{text}", stderr(&out));
    assert!(text.contains("touch=1"), "{text}");
    assert!(
        stderr(&out).contains("Read-only file system"),
        "{}",
        stderr(&out)
    );
    let uptime: f64 = text
        .lines()
        .last()
        .and_then(|l| l.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no uptime in {text}"));
    assert!(uptime >= 8640000.0, "boottime offset not applied: {uptime}");

    // A rootfs on a nosuid,nodev filesystem: the user namespace locks those flags, so the
    // read-only remount of / must keep them (else EPERM). The tmpfs is mounted in a mount
    // namespace made for this run only (`unshare -m`), never on the host.
    let nosuid_root = env.bundle().join("rootfs-nosuid");
    fs::create_dir(&nosuid_root).unwrap();
    env.set_config(|c| {
        c["root"]["path"] = json!("rootfs-nosuid");
        c["process"]["args"] = json!([
            "sh",
            "-c",
            "touch /x; echo touch=$?; grep ' / / ' /proc/self/mountinfo"
        ]);
    });
    let id = env.id("userns-nosuid");
    let script = "mount -t tmpfs -o nosuid,nodev,mode=755 tmpfs \"$1\" && cp -a \"$2\"/. \"$1\"/ \
                  && chown -R 100000:100000 \"$1\" && shift 2 && exec \"$@\"";
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(&nosuid_root)
        .arg(env.bundle().join("rootfs"))
        .arg(env.dir.path().join("podlet-runc"))
        .arg("--root")
        .arg(env.root())
        .arg("--cgroup-root")
        .arg(env.cgroup_root())
        .args(["run", "--bundle"])
        .arg(env.bundle())
        .arg(&id);
    let out = runc_env::run_with_files(cmd, env.dir.path());
    let text = stdout(&out);
    assert!(out.status.success(), "{}{text}", stderr(&out));
    assert!(text.contains("touch=1"), "{text}");
    let opts = mount_options(&text, "/");
    for want in ["ro", "nosuid", "nodev"] {
        assert!(opts.contains(&want), "/ lacks {want}: {opts:?}");
    }
    env.assert_nothing_left("userns read-only root");
}

fn hook(script: &str) -> Value {
    json!({"path": "/bin/sh", "args": ["sh", "-c", script]})
}

#[test]
fn failing_poststart_fails_start_and_failing_poststop_fails_delete() {
    let mut env = Env::new();
    let d = env.dir.path().join("hooks");
    fs::create_dir(&d).unwrap();
    let ds = d.to_str().unwrap().to_string();
    env.set_config(|c| {
        c["hooks"] = json!({
            "poststart": [{"path": "/bin/false"}, hook(&format!("echo x > {ds}/poststart"))],
            "poststop": [{"path": "/bin/false"}, hook(&format!("echo x > {ds}/poststop"))],
        });
    });
    env.set_args(&["sleep", "1000"]);
    let id = env.id("hookfail");
    let b = env.bundle().to_str().unwrap().to_string();
    let out = env.runc(&["create", "--bundle", &b, &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.runc(&["start", &id]);
    assert!(
        !out.status.success(),
        "start ignored a failing poststart hook"
    );
    assert!(
        stderr(&out).contains("poststart") && stderr(&out).contains("/bin/false"),
        "{}",
        stderr(&out)
    );
    assert!(d.join("poststart").exists(), "the later hook did not run");
    // As runc does, the container whose poststart failed is stopped.
    wait_for(|| state(&env, &id)["status"] == "stopped", "stopped");
    let out = env.runc(&["delete", &id]);
    assert!(
        !out.status.success(),
        "delete ignored a failing poststop hook"
    );
    assert!(
        stderr(&out).contains("poststop") && stderr(&out).contains("/bin/false"),
        "{}",
        stderr(&out)
    );
    assert!(d.join("poststop").exists());
    // The container is gone all the same.
    assert!(!env.runc(&["state", &id]).status.success());
    env.assert_nothing_left("hook failures");
}

#[test]
fn start_container_hooks_see_the_process_environment() {
    let mut env = Env::new();
    env.set_config(|c| {
        c["root"]["readonly"] = json!(false);
        c["process"]["env"]
            .as_array_mut()
            .unwrap()
            .push(json!("ONE=two"));
        c["hooks"] = json!({
            "startContainer": [
                hook("echo \"one=$ONE\" > /hookenv"),
                {"path": "/bin/sh", "args": ["sh", "-c", "echo \"own=$ONE\" >> /hookenv"],
                 "env": ["ONE=own"]},
            ],
        });
    });
    let out = env.run("hookenv", &["cat", "/hookenv"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "one=two\nown=own\n");
    env.assert_nothing_left("startContainer env");
}

/// The `Cap*:` lines of a process's status as (name, mask).
fn cap_masks(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("Cap"))
        .filter_map(|l| l.split_once(":\t"))
        .map(|(k, v)| (k.to_string(), u64::from_str_radix(v.trim(), 16).unwrap()))
        .collect()
}

#[test]
fn capability_sets_are_taken_as_written() {
    let mut env = Env::new();
    // runc's `spec` leaves inheritable and ambient out (CVE-2022-29162): so does podlet-runc's.
    let caps = env.config()["process"]["capabilities"].clone();
    assert!(caps.get("inheritable").is_none(), "{caps}");
    assert!(caps.get("ambient").is_none(), "{caps}");
    let out = env.run("caps", &["grep", "^Cap", "/proc/self/status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let masks = cap_masks(&stdout(&out));
    let get = |k: &str| masks.iter().find(|(n, _)| n == k).unwrap().1;
    assert_eq!(get("Inh"), 0, "{masks:?}");
    assert_eq!(get("Amb"), 0, "{masks:?}");
    // CAP_KILL (5), CAP_NET_BIND_SERVICE (10), CAP_AUDIT_WRITE (29).
    let want = (1 << 5) | (1 << 10) | (1 << 29);
    assert_eq!(get("Prm"), want, "{masks:?}");
    assert_eq!(get("Bnd"), want, "{masks:?}");

    // `exec --cap` adds to bounding, effective and permitted, not to inheritable.
    let id = started(&mut env, "caps-exec", &["sleep", "1000"]);
    let out = env.runc(&[
        "exec",
        "--cap",
        "CAP_CHOWN",
        &id,
        "grep",
        "^Cap",
        "/proc/self/status",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let masks = cap_masks(&stdout(&out));
    let get = |k: &str| masks.iter().find(|(n, _)| n == k).unwrap().1;
    assert_eq!(get("Inh"), 0, "{masks:?}");
    assert_eq!(get("Prm"), want | 1, "{masks:?}");
    assert!(env.runc(&["delete", "--force", &id]).status.success());

    // A capability asked for in effective/permitted but missing from bounding fails create.
    env.set_config(|c| {
        c["process"]["capabilities"] = json!({
            "bounding": ["CAP_KILL"],
            "effective": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
            "permitted": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
        });
    });
    let out = env.run("caps-bad", &["true"]);
    assert!(
        !out.status.success(),
        "a capability outside bounding was accepted"
    );
    let err = stderr(&out);
    assert!(
        err.contains("CAP_NET_BIND_SERVICE") && err.contains("bounding"),
        "{err}"
    );
    env.assert_nothing_left("capabilities");
}

#[test]
fn features_lists_the_newer_fields() {
    let env = Env::new();
    let out = env.runc(&["features"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let f: Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap_or_else(|| panic!("not a list: {v}"))
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    let opts = list(&f["mountOptions"]);
    for o in [
        "rro",
        "rrw",
        "rnosuid",
        "rnodev",
        "rnoexec",
        "rnoatime",
        "rstrictatime",
        "rnodiratime",
        "rnosymfollow",
        "nosymfollow",
    ] {
        assert!(opts.contains(&o.to_string()), "mountOptions lacks {o}");
    }
    let modes = list(&f["linux"]["memoryPolicy"]["modes"]);
    assert!(modes.contains(&"MPOL_INTERLEAVE".to_string()), "{modes:?}");
    let flags = list(&f["linux"]["memoryPolicy"]["flags"]);
    assert!(
        flags.contains(&"MPOL_F_STATIC_NODES".to_string()),
        "{flags:?}"
    );
    let policies = list(&f["linux"]["scheduler"]["policies"]);
    assert!(
        policies.contains(&"SCHED_BATCH".to_string()),
        "{policies:?}"
    );
    assert!(f["potentiallyUnsafeConfigAnnotations"].is_array(), "{f}");
}
