//! Host tier: `podlet-runc` runs real containers from a busybox bundle (namespaces, pivot_root,
//! mounts, devices, cgroups, capabilities), drives the create/start/state/kill/delete
//! lifecycle, and rejects bad input without leaving state, cgroups or processes behind.

#[path = "runc_env.rs"]
mod runc_env;

use std::fs;
use std::os::unix::process::CommandExt;
use std::process::Command;

use runc_env::{run_with_files, stderr, stdout, Env};
use serde_json::{json, Value};

#[test]
fn run_gives_an_isolated_container_and_cleans_up() {
    let mut env = Env::new();
    let out = env.run(
        "iso",
        &[
            "sh",
            "-c",
            "echo pid=$$; hostname; cat /proc/self/cgroup | grep '^0::'; ls /dev; ls /",
        ],
    );
    let text = stdout(&out);
    assert!(out.status.success(), "{}{}", text, stderr(&out));
    assert!(
        text.contains("pid=1\n"),
        "not pid 1 in its own pid namespace: {text}"
    );
    assert!(text.contains("podlet\n"), "hostname not set: {text}");
    assert!(
        text.contains("0::/\n"),
        "cgroup namespace root is not the container's cgroup: {text}"
    );
    for dev in [
        "null", "zero", "urandom", "tty", "pts", "shm", "stdout", "ptmx",
    ] {
        assert!(text.lines().any(|l| l == dev), "/dev/{dev} missing: {text}");
    }
    assert!(
        !text.contains("state\n") && text.contains("bin\n"),
        "root is not the bundle's rootfs: {text}"
    );
    env.assert_nothing_left("after run");
}

#[test]
fn exit_code_is_the_containers() {
    let mut env = Env::new();
    assert_eq!(
        env.run("exit", &["sh", "-c", "exit 7"]).status.code(),
        Some(7)
    );
    // A container killed by a signal: `run` reports 128 + signal, like a shell.
    env.set_args(&["sleep", "1000"]);
    let id = env.id("killed");
    let mut run = env.command(&["run", "--bundle", env.bundle().to_str().unwrap(), &id]);
    run.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = run.spawn().unwrap();
    let mut running = false;
    for _ in 0..500 {
        let st: Value =
            serde_json::from_slice(&env.runc(&["state", &id]).stdout).unwrap_or(Value::Null);
        if st["status"] == "running" {
            running = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let killed = running && env.runc(&["kill", &id, "9"]).status.success();
    let status = child.wait().unwrap();
    assert!(killed, "container never ran or could not be killed");
    assert_eq!(status.code(), Some(128 + 9));
}

#[test]
fn lifecycle_create_start_pause_resume_kill_delete() {
    let mut env = Env::new();
    env.set_args(&["sleep", "1000"]);
    let id = env.id("life");
    let pid_file = env.dir.path().join("pid");
    let out = env.runc(&[
        "create",
        "--bundle",
        env.bundle().to_str().unwrap(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let state =
        |env: &Env| -> Value { serde_json::from_slice(&env.runc(&["state", &id]).stdout).unwrap() };
    let st = state(&env);
    assert_eq!(st["status"], "created");
    let pid = st["pid"].as_i64().unwrap();
    assert_eq!(fs::read_to_string(&pid_file).unwrap(), pid.to_string());
    assert_eq!(st["id"], id.as_str());
    assert_eq!(st["bundle"], env.bundle().to_str().unwrap());
    // Created means waiting: the user program has not been exec'd yet.
    let cmdline = fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(!cmdline.starts_with("sleep"), "{cmdline}");
    let dup = env.runc(&["create", "--bundle", env.bundle().to_str().unwrap(), &id]);
    assert!(
        !dup.status.success() && stderr(&dup).contains("already exists"),
        "{}",
        stderr(&dup)
    );

    assert!(env.runc(&["start", &id]).status.success());
    assert_eq!(state(&env)["status"], "running");
    let cmdline = fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(cmdline.starts_with("sleep"), "{cmdline}");
    let ps: Vec<i64> =
        serde_json::from_slice(&env.runc(&["ps", "--format", "json", &id]).stdout).unwrap();
    assert_eq!(ps, vec![pid]);
    let again = env.runc(&["start", &id]);
    assert!(
        !again.status.success() && stderr(&again).contains("running"),
        "{}",
        stderr(&again)
    );

    assert!(env.runc(&["pause", &id]).status.success());
    assert_eq!(state(&env)["status"], "paused");
    let proc_state = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    assert!(env.runc(&["resume", &id]).status.success());
    assert_eq!(state(&env)["status"], "running", "{proc_state}");

    let list: Vec<Value> =
        serde_json::from_slice(&env.runc(&["list", "--format", "json"]).stdout).unwrap();
    assert!(list
        .iter()
        .any(|c| c["id"] == id.as_str() && c["status"] == "running"));

    let refused = env.runc(&["delete", &id]);
    assert!(!refused.status.success() && stderr(&refused).contains("--force"));
    assert!(env.runc(&["kill", &id, "KILL"]).status.success());
    for _ in 0..200 {
        if state(&env)["status"] == "stopped" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(state(&env)["status"], "stopped");
    assert!(env.runc(&["delete", &id]).status.success());
    let gone = env.runc(&["state", &id]);
    assert!(!gone.status.success() && stderr(&gone).contains("does not exist"));
    assert!(
        env.cgroup_dirs().is_empty(),
        "cgroups left: {:?}",
        env.cgroup_dirs()
    );
}

#[test]
fn capabilities_no_new_privs_and_readonly_root_apply() {
    let mut env = Env::new();
    env.set_config(|c| {
        c["root"]["readonly"] = json!(true);
        c["process"]["noNewPrivileges"] = json!(true);
    });
    let out = env.run("caps", &["sh", "-c", "grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status; touch /x && echo wrote-root; cat /proc/kcore | head -c 1 | grep -c . ; true"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    // The default spec keeps CAP_AUDIT_WRITE (29), CAP_KILL (5), CAP_NET_BIND_SERVICE (10).
    let mask = (1u64 << 29) | (1 << 5) | (1 << 10);
    assert!(text.contains(&format!("CapEff:\t{mask:016x}")), "{text}");
    assert!(text.contains(&format!("CapBnd:\t{mask:016x}")), "{text}");
    assert!(text.contains("NoNewPrivs:\t1"), "{text}");
    assert!(
        !text.contains("wrote-root"),
        "read-only root was writable: {text}"
    );
    assert!(
        text.trim_end().ends_with('0'),
        "masked /proc/kcore was readable: {text}"
    );
}

#[test]
fn no_runtime_fd_leaks_into_the_container() {
    let mut env = Env::new();
    env.set_args(&["ls", "/proc/self/fd"]);
    let id = env.id("fds");
    let leaky = fs::File::open("/etc/hostname").unwrap();
    let raw = std::os::fd::AsRawFd::as_raw_fd(&leaky);
    let mut cmd = env.command(&["run", "--bundle", env.bundle().to_str().unwrap(), &id]);
    // SAFETY: dup2 in the child before exec; fd 7 inherits without CLOEXEC on purpose.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(raw, 7) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = run_with_files(cmd, env.dir.path());
    let fds: Vec<String> = stdout(&out)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert!(out.status.success(), "{}", stderr(&out));
    // 0-2 and ls's own directory fd, nothing else.
    assert!(!fds.contains(&"7".to_string()), "fd 7 leaked: {fds:?}");
    assert!(fds.len() <= 4, "{fds:?}");
}

#[test]
fn joins_an_existing_network_namespace_by_path() {
    let mut env = Env::new();
    let mut holder = Command::new("unshare")
        .args(["--net", "sleep", "1000"])
        .spawn()
        .unwrap();
    let host_ns = fs::read_link("/proc/self/ns/net").unwrap();
    let path = format!("/proc/{}/ns/net", holder.id());
    let mut holder_ns = fs::read_link(&path).unwrap();
    for _ in 0..200 {
        if holder_ns != host_ns {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
        holder_ns = fs::read_link(&path).unwrap();
    }
    env.set_config(|c| {
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        for n in ns.iter_mut() {
            if n["type"] == "network" {
                n["path"] = json!(path);
            }
        }
    });
    let out = env.run("join", &["readlink", "/proc/self/ns/net"]);
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), holder_ns.to_string_lossy());
}

#[test]
fn bad_input_fails_clearly_and_leaves_nothing() {
    let mut env = Env::new();
    let bundle = env.bundle().to_str().unwrap().to_string();
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|c| c["root"]["path"] = json!("missing-rootfs")),
            "root.path",
        ),
        (
            Box::new(|c| c["linux"]["namespaces"] = json!([{"type": "bogus"}])),
            "bogus",
        ),
        (Box::new(|c| c["ociVersion"] = json!("2.0.0")), "ociVersion"),
        (
            Box::new(|c| c["process"]["cwd"] = json!("/does/not/exist")),
            "process.cwd",
        ),
        (
            Box::new(|c| c["process"]["args"] = json!(["/no/such/program"])),
            "/no/such/program",
        ),
    ];
    for (i, (edit, needle)) in cases.into_iter().enumerate() {
        let saved = env.config();
        env.set_config(|c| edit(c));
        let id = env.id(&format!("bad{i}"));
        let out = env.runc(&["create", "--bundle", &bundle, &id]);
        env.set_config(|c| *c = saved);

        assert_eq!(out.status.code(), Some(1), "case {needle}");
        let err = stderr(&out);
        assert!(err.contains(needle), "case {needle}: {err}");
        assert_eq!(
            err.trim().lines().count(),
            1,
            "error is not one line: {err}"
        );
        env.assert_nothing_left(needle);
    }
    fs::write(env.bundle().join("config.json"), "{ not json").unwrap();
    let out = env.runc(&["create", "--bundle", &bundle, "x"]);
    assert!(
        !out.status.success() && stderr(&out).contains("config.json"),
        "{}",
        stderr(&out)
    );
    for (args, needle) in [
        (vec!["state", "nope"], "does not exist"),
        (vec!["delete", "nope"], "does not exist"),
        (vec!["state", "../etc"], "invalid container id"),
        (vec!["kill", "nope", "SIGBOGUS"], "unknown signal"),
    ] {
        let out = env.runc(&args);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
    let out = env.runc(&["--systemd-cgroup", "state", "x"]);
    assert!(!out.status.success() && stderr(&out).contains("--systemd-cgroup"));
    assert!(env.state_entries().is_empty());
}

#[test]
fn joins_an_existing_pid_namespace_by_path() {
    let mut env = Env::new();
    // `unshare --pid --fork` keeps the new namespace's pid 1 (sleep) alive as its child.
    let mut holder = Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child", "sleep", "1000"])
        .spawn()
        .unwrap();
    let path = format!("/proc/{}/ns/pid_for_children", holder.id());
    let host_ns = fs::read_link("/proc/self/ns/pid").unwrap();
    let mut target = fs::read_link(&path).unwrap();
    for _ in 0..200 {
        if target != host_ns {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
        target = fs::read_link(&path).unwrap();
    }
    env.set_config(|c| {
        for n in c["linux"]["namespaces"].as_array_mut().unwrap().iter_mut() {
            if n["type"] == "pid" {
                n["path"] = json!(path);
            }
        }
    });
    let out = env.run(
        "pidjoin",
        &["sh", "-c", "readlink /proc/self/ns/pid; echo pid=$$"],
    );
    let _ = holder.kill();
    let _ = holder.wait();
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        text.starts_with(&format!("{}\n", target.to_string_lossy())),
        "{text}"
    );
    assert!(
        !text.contains("pid=1\n"),
        "joined namespace already has a pid 1: {text}"
    );
}

/// containerd's go-runc reads a failed runtime's last error from `--log FILE --log-format
/// json` in runc's shape; stderr keeps the word "error" as runc's does.
#[test]
fn errors_are_logged_in_runcs_json_and_text_shapes() {
    let env = Env::new();
    let log = env.dir.path().join("runc-log.json");
    let out = env.runc(&[
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "state",
        "no-such-container",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("error"), "{}", stderr(&out));
    let text = fs::read_to_string(&log).unwrap();
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["level"], "error", "{text}");
    assert!(
        last["msg"].as_str().unwrap().contains("no-such-container"),
        "{text}"
    );
    assert!(last["time"].as_str().unwrap().ends_with('Z'), "{text}");
    let log_text = env.dir.path().join("runc-log.txt");
    let out = env.runc(&[
        "--log",
        log_text.to_str().unwrap(),
        "state",
        "no-such-container",
    ]);
    assert!(!out.status.success());
    let text = fs::read_to_string(&log_text).unwrap();
    let last = text.lines().last().unwrap();
    assert!(
        last.starts_with("time=\"")
            && last.contains(" level=error msg=\"")
            && last.contains("no-such-container"),
        "{text}"
    );
}

/// `podlet-runc spec` masks what runc's default configuration masks, the RAPL power-capping
/// counters included (a side channel on the host's CPU activity), and a container with that
/// configuration starts where the path does not exist.
#[test]
fn the_default_spec_masks_runcs_list() {
    let mut env = Env::new();
    let masked = env.config()["linux"]["maskedPaths"].clone();
    for p in [
        "/sys/devices/virtual/powercap",
        "/proc/kcore",
        "/sys/firmware",
        "/proc/keys",
    ] {
        assert!(
            masked.as_array().unwrap().iter().any(|m| m == p),
            "{p} not masked: {masked}"
        );
    }
    // /proc/timer_list exists here (kcore and powercap do not): masked, it reads empty.
    let out = env.run("masked", &["cat", "/proc/timer_list"]);
    assert!(
        out.status.success() && stdout(&out).is_empty(),
        "{}",
        stderr(&out)
    );
}
