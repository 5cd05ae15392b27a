//! Host tier: the process side of `podlet-runc` — seccomp (incl. SCMP_ACT_NOTIFY), hooks at
//! their lifecycle points, `exec`, terminals through `--console-socket`, `events`, `update`,
//! and the sealed runtime copy.

#[path = "runc_env.rs"]
mod runc_env;

use std::fs;
use std::io::Read;
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use podlet_runtime::process::fdpass::recv_with_fd;
use runc_env::{run_with_files, stderr, stdout, Env};
use serde_json::{json, Value};

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

fn state(env: &Env, id: &str) -> Value {
    serde_json::from_slice(&env.runc(&["state", id]).stdout).unwrap_or(Value::Null)
}

/// Creates and starts `args` as a long-running container; returns its id and pid.
fn started(env: &mut Env, name: &str, args: &[&str]) -> (String, i64) {
    env.set_args(args);
    let id = env.id(name);
    let b = env.bundle().to_str().unwrap().to_string();
    let out = env.runc(&["create", "--bundle", &b, &id]);
    assert!(out.status.success(), "create: {}", stderr(&out));
    let out = env.runc(&["start", &id]);
    assert!(out.status.success(), "start: {}", stderr(&out));
    let pid = state(env, &id)["pid"].as_i64().unwrap();
    (id, pid)
}

#[test]
fn seccomp_errno_and_argument_rules_apply() {
    let mut env = Env::new();
    env.set_config(|c| {
        c["root"]["readonly"] = json!(false);
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
            "syscalls": [
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                {"names": ["kill"], "action": "SCMP_ACT_ERRNO",
                 "args": [{"index": 1, "value": 10, "op": "SCMP_CMP_EQ"}]}
            ]
        });
    });
    let out = env.run(
        "seccomp",
        &[
            "sh",
            "-c",
            "grep ^Seccomp: /proc/self/status; mkdir /made; echo mkdir=$?; \
             kill -USR1 $$; echo usr1=$?; kill -0 $$; echo zero=$?",
        ],
    );
    let text = stdout(&out) + &stderr(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Seccomp:\t2"), "no filter mode: {text}");
    assert!(
        text.contains("mkdir=1") && text.contains("Permission denied"),
        "{text}"
    );
    assert!(!env.bundle().join("rootfs/made").exists());
    // kill(…, SIGUSR1) matches the argument rule; kill(…, 0) does not.
    assert!(text.contains("usr1=1"), "{text}");
    assert!(text.contains("zero=0"), "{text}");
}

#[test]
fn seccomp_notify_hands_the_fd_and_state_to_the_listener() {
    let mut env = Env::new();
    let sock = env.dir.path().join("seccomp.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    env.set_config(|c| {
        c["root"]["readonly"] = json!(false);
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": sock,
            "listenerMetadata": "test-agent",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]
        });
    });
    // The agent: receives the fd with the state, then answers one mkdir with EROFS.
    let agent = std::thread::spawn(move || -> Value {
        let (conn, _) = listener.accept().unwrap();
        let (data, fd) = recv_with_fd(&conn).unwrap();
        let fd = fd.expect("notify fd attached");
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let req = libseccomp::ScmpNotifReq::receive(raw).expect("a notification");
        let resp = libseccomp::ScmpNotifResp::new_error(
            req.id,
            -libc::EROFS,
            libseccomp::ScmpNotifRespFlags::empty(),
        );
        resp.respond(raw).unwrap();
        serde_json::from_slice(&data).unwrap()
    });
    let out = env.run("notify", &["sh", "-c", "mkdir /made; echo mkdir=$?"]);
    let text = stdout(&out) + &stderr(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("mkdir=1") && text.contains("Read-only file system"),
        "{text}"
    );
    let doc = agent.join().unwrap();
    assert_eq!(doc["fds"], json!(["seccompFd"]), "{doc}");
    assert_eq!(doc["metadata"], "test-agent");
    assert!(doc["pid"].as_i64().unwrap() > 0, "{doc}");
    assert!(
        doc["state"]["id"].as_str().unwrap().starts_with("notify-"),
        "{doc}"
    );
}

#[test]
fn seccomp_notify_without_listener_is_refused_cleanly() {
    let mut env = Env::new();
    env.set_config(|c| {
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]
        });
    });
    env.set_args(&["true"]);
    let id = env.id("nolistener");
    let b = env.bundle().to_str().unwrap().to_string();
    let out = env.runc(&["create", "--bundle", &b, &id]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("listenerPath"), "{}", stderr(&out));
    env.assert_nothing_left("seccomp notify without listener");
}

fn hook(script: &str) -> Value {
    json!({"path": "/bin/sh", "args": ["sh", "-c", script], "env": ["PATH=/usr/bin:/bin"]})
}

#[test]
fn hooks_run_at_their_points_with_state_on_stdin() {
    let mut env = Env::new();
    let d = env.dir.path().join("hooks");
    fs::create_dir(&d).unwrap();
    let ds = d.to_str().unwrap().to_string();
    env.set_config(|c| {
        c["root"]["readonly"] = json!(false);
        c["hooks"] = json!({
            "createRuntime": [hook(&format!(
                "cat > {ds}/createRuntime.json; readlink /proc/self/ns/mnt > {ds}/createRuntime.mnt; echo createRuntime >> {ds}/order"))],
            "createContainer": [hook(&format!(
                "cat > {ds}/createContainer.json; readlink /proc/self/ns/mnt > {ds}/createContainer.mnt; echo createContainer >> {ds}/order"))],
            // Resolves inside the container (busybox's /bin/sh) and writes to its root.
            "startContainer": [hook("cat > /startContainer.json")],
            "poststart": [hook(&format!("cat > {ds}/poststart.json; echo poststart >> {ds}/order"))],
            "poststop": [hook(&format!("cat > {ds}/poststop.json; echo poststop >> {ds}/order"))],
        });
    });
    let (id, pid) = started(&mut env, "hooks", &["sleep", "1000"]);
    let read = |name: &str| -> Value {
        serde_json::from_slice(&fs::read(d.join(name)).unwrap_or_default()).unwrap_or(Value::Null)
    };
    let cr = read("createRuntime.json");
    assert_eq!(cr["id"], id.as_str(), "{cr}");
    assert_eq!(cr["pid"].as_i64(), Some(pid));
    assert_eq!(cr["status"], "creating");
    let host_mnt = fs::read_link("/proc/self/ns/mnt").unwrap();
    let cr_mnt = fs::read_to_string(d.join("createRuntime.mnt")).unwrap();
    let cc_mnt = fs::read_to_string(d.join("createContainer.mnt")).unwrap();
    assert_eq!(
        cr_mnt.trim(),
        host_mnt.to_string_lossy(),
        "createRuntime runs in the runtime namespace"
    );
    let container_mnt = fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap();
    assert_eq!(
        cc_mnt.trim(),
        container_mnt.to_string_lossy(),
        "createContainer runs in the container's"
    );
    assert_eq!(read("createContainer.json")["pid"].as_i64(), Some(pid));
    let sc: Value =
        serde_json::from_slice(&fs::read(env.bundle().join("rootfs/startContainer.json")).unwrap())
            .unwrap();
    assert_eq!(sc["id"], id.as_str());
    wait_for(|| d.join("poststart.json").exists(), "poststart");
    assert_eq!(read("poststart.json")["status"], "running");
    let out = env.runc(&["delete", "--force", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(read("poststop.json")["status"], "stopped");
    let order = fs::read_to_string(d.join("order")).unwrap();
    assert_eq!(
        order.lines().collect::<Vec<_>>(),
        ["createRuntime", "createContainer", "poststart", "poststop"]
    );
}

#[test]
fn a_hook_that_times_out_or_fails_aborts_create_and_leaves_nothing() {
    let mut env = Env::new();
    for (h, needle) in [
        (
            json!({"path": "/bin/sleep", "args": ["sleep", "5"], "timeout": 1}),
            "timed out",
        ),
        (json!({"path": "/bin/false"}), "exited"),
    ] {
        env.set_config(|c| c["hooks"] = json!({"createRuntime": [h]}));
        env.set_args(&["true"]);
        let id = env.id("hookfail");
        let b = env.bundle().to_str().unwrap().to_string();
        let start = Instant::now();
        let out = env.runc(&["create", "--bundle", &b, &id]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(needle), "{}", stderr(&out));
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "timeout not enforced"
        );
        env.assert_nothing_left(needle);
    }
}

#[test]
fn exec_runs_a_process_inside_the_container() {
    let mut env = Env::new();
    let (id, pid) = started(&mut env, "exec", &["sleep", "1000"]);
    let out = env.runc(&[
        "exec", "--env", "FOO=bar", "--cwd", "/bin", "--user", "1000:1001", &id, "sh", "-c",
        "echo foo=$FOO; pwd; id -u; id -g; for n in pid mnt uts; do readlink /proc/self/ns/$n; done",
    ]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[..4], ["foo=bar", "/bin", "1000", "1001"], "{text}");
    for (i, ns) in ["pid", "mnt", "uts"].iter().enumerate() {
        let want = fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        assert_eq!(lines[4 + i], want.to_string_lossy(), "{ns} namespace");
    }
    let code = env.runc(&["exec", &id, "sh", "-c", "exit 3"]);
    assert_eq!(code.status.code(), Some(3));

    let pid_file = env.dir.path().join("exec.pid");
    let out = env.runc(&[
        "exec",
        "--detach",
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
        "sleep",
        "999",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let epid: i64 = fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    let ps: Vec<i64> =
        serde_json::from_slice(&env.runc(&["ps", "--format", "json", &id]).stdout).unwrap();
    assert!(ps.contains(&epid) && ps.contains(&pid), "{ps:?}");

    let bad = env.runc(&["exec", &id, "/no/such/thing"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("/no/such/thing"), "{}", stderr(&bad));
    let none = env.runc(&["exec", &id]);
    assert!(!none.status.success() && stderr(&none).contains("COMMAND"));
    let missing = env.runc(&["exec", "no-such-container", "true"]);
    assert!(!missing.status.success() && stderr(&missing).contains("does not exist"));

    assert!(env.runc(&["kill", &id, "KILL"]).status.success());
    wait_for(|| state(&env, &id)["status"] == "stopped", "stop");
    let stopped = env.runc(&["exec", &id, "true"]);
    assert!(
        !stopped.status.success() && stderr(&stopped).contains("stopped"),
        "{}",
        stderr(&stopped)
    );
    assert!(env.runc(&["delete", "--force", &id]).status.success());
    env.assert_nothing_left("exec");
}

#[test]
fn exec_takes_a_process_json() {
    let mut env = Env::new();
    let (id, _) = started(&mut env, "execjson", &["sleep", "1000"]);
    let p = env.dir.path().join("process.json");
    fs::write(
        &p,
        json!({"args": ["sh", "-c", "echo $A-$(id -u)"], "env": ["A=json"], "cwd": "/",
               "user": {"uid": 7, "gid": 7}})
        .to_string(),
    )
    .unwrap();
    let out = env.runc(&["exec", "--process", p.to_str().unwrap(), &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "json-7");
    fs::write(&p, "{broken").unwrap();
    let out = env.runc(&["exec", "--process", p.to_str().unwrap(), &id]);
    assert!(!out.status.success() && stderr(&out).contains("process.json"));
}

#[test]
fn a_terminal_goes_to_the_console_socket() {
    let mut env = Env::new();
    env.set_args(&["sh", "-c", "tty; echo hello-pty"]);
    env.set_config(|c| c["process"]["terminal"] = json!(true));
    let id = env.id("tty");
    let b = env.bundle().to_str().unwrap().to_string();
    // Without a console socket the pty would have nowhere to go.
    let out = env.runc(&["create", "--bundle", &b, &id]);
    assert!(!out.status.success() && stderr(&out).contains("console-socket"));
    env.assert_nothing_left("terminal without console socket");

    let sock = env.dir.path().join("console.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let console = std::thread::spawn(move || -> String {
        let (conn, _) = listener.accept().unwrap();
        let (_, fd) = recv_with_fd(&conn).unwrap();
        let mut master = fs::File::from(fd.expect("pty master attached"));
        let mut seen = String::new();
        let mut buf = [0u8; 256];
        while !seen.contains("hello-pty") {
            match master.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        seen
    });
    let out = env.runc(&[
        "create",
        "--bundle",
        &b,
        "--console-socket",
        sock.to_str().unwrap(),
        &id,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(env.runc(&["start", &id]).status.success());
    let seen = console.join().unwrap();
    assert!(seen.contains("hello-pty"), "{seen:?}");
    assert!(
        seen.contains("/dev/pts/") || seen.contains("/dev/console"),
        "{seen:?}"
    );
}

#[test]
fn exec_with_a_terminal_uses_the_console_socket() {
    let mut env = Env::new();
    let (id, _) = started(&mut env, "exectty", &["sleep", "1000"]);
    let sock = env.dir.path().join("exec-console.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    // The master is handed back open: closing it early would hang up the exec'd shell.
    let console = std::thread::spawn(move || -> (String, fs::File) {
        let (conn, _) = listener.accept().unwrap();
        let (_, fd) = recv_with_fd(&conn).unwrap();
        let mut master = fs::File::from(fd.expect("pty master attached"));
        let mut seen = String::new();
        let mut buf = [0u8; 256];
        while !seen.contains("in-exec-pty") {
            match master.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        (seen, master)
    });
    let out = env.runc(&[
        "exec",
        "--tty",
        "--console-socket",
        sock.to_str().unwrap(),
        &id,
        "sh",
        "-c",
        "test -t 0 && echo in-exec-pty",
    ]);
    let (seen, _master) = console.join().unwrap();
    assert!(out.status.success(), "{:?} {}", out.status, stderr(&out));
    assert!(seen.contains("in-exec-pty"), "{seen:?}");
}

#[test]
fn events_report_stats_and_update_changes_limits() {
    let mut env = Env::new();
    let (id, _) = started(&mut env, "events", &["sleep", "1000"]);
    let stats = |env: &Env| -> Value {
        let out = env.runc(&["events", "--stats", &id]);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let ev = stats(&env);
    assert_eq!(ev["type"], "stats");
    assert_eq!(ev["id"], id.as_str());
    assert!(ev["data"]["pids"]["current"].as_u64().unwrap() >= 1, "{ev}");

    let out = env.runc(&["update", "--pids-limit", "20", "--memory", "64m", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ev = stats(&env);
    assert_eq!(ev["data"]["pids"]["limit"], 20, "{ev}");
    assert_eq!(ev["data"]["memory"]["usage"]["limit"], 64u64 << 20, "{ev}");
    let res = env.dir.path().join("res.json");
    fs::write(&res, json!({"pids": {"limit": 30}}).to_string()).unwrap();
    let out = env.runc(&["update", "--resources", res.to_str().unwrap(), &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stats(&env)["data"]["pids"]["limit"], 30);
    fs::write(&res, "[1,2").unwrap();
    let out = env.runc(&["update", "--resources", res.to_str().unwrap(), &id]);
    assert!(!out.status.success() && stderr(&out).contains("--resources"));
    let out = env.runc(&["update", "--memory", "lots", &id]);
    assert!(!out.status.success() && stderr(&out).contains("lots"));

    // Streaming: stats lines every interval until the container stops.
    let cmd = env.command(&["events", "--interval", "100ms", &id]);
    let dir = env.dir.path().to_path_buf();
    let stream = std::thread::spawn(move || run_with_files(cmd, &dir));
    std::thread::sleep(Duration::from_millis(600));
    assert!(env.runc(&["kill", &id, "KILL"]).status.success());
    let out = stream.join().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 2, "{lines:?}");
    assert!(lines.iter().all(|l| l["type"] == "stats"));
    assert!(env.runc(&["delete", "--force", &id]).status.success());
    env.assert_nothing_left("update");
}

#[test]
fn the_runtime_runs_from_a_sealed_copy_of_itself() {
    let mut env = Env::new();
    env.set_args(&["sleep", "1000"]);
    let id = env.id("sealed");
    let b = env.bundle().to_str().unwrap().to_string();
    let out = env.runc(&["create", "--bundle", &b, &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pid = state(&env, &id)["pid"].as_i64().unwrap();
    // The waiting init is still the runtime: its exe must be a read-only view of the binary
    // (a detached read-only overlay), never the binary file itself.
    let exe_link = format!("/proc/{pid}/exe");
    let exe = fs::read_link(&exe_link).unwrap();
    let real = fs::canonicalize(env!("CARGO_BIN_EXE_podlet")).unwrap();
    assert_ne!(exe, real, "init runs from the writable binary");
    let ro = nix::sys::statvfs::statvfs(exe_link.as_str())
        .unwrap()
        .flags()
        .contains(nix::sys::statvfs::FsFlags::ST_RDONLY);
    assert!(
        ro || exe.to_string_lossy().starts_with("/memfd:podlet-runc"),
        "{exe:?} is neither on a read-only mount nor a sealed memfd"
    );
    let write = fs::OpenOptions::new().write(true).open(&exe_link);
    assert!(write.is_err(), "the runtime image was writable");
    // Nothing was mounted in the runtime's (here: the host's) mount namespace for it.
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains("overlay"),
        "an overlay appeared in the host's mounts"
    );
}

#[test]
fn create_without_process_waits_and_start_refuses() {
    let mut env = Env::new();
    env.set_config(|c| {
        c.as_object_mut().unwrap().remove("process");
    });
    let id = env.id("noproc");
    let b = env.bundle().to_str().unwrap().to_string();
    let out = env.runc(&["create", "--bundle", &b, &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(state(&env, &id)["status"], "created");
    // The spec: deleting a container that is not stopped is an error.
    let del = env.runc(&["delete", &id]);
    assert!(
        !del.status.success() && stderr(&del).contains("created"),
        "{}",
        stderr(&del)
    );
    let start = env.runc(&["start", &id]);
    assert!(!start.status.success());
    assert!(stderr(&start).contains("no process"), "{}", stderr(&start));
    wait_for(|| state(&env, &id)["status"] == "stopped", "init to exit");
    assert!(env.runc(&["delete", &id]).status.success());
    env.assert_nothing_left("no process");
}

#[test]
fn rootfs_propagation_is_applied_to_the_new_root() {
    let mut env = Env::new();
    for (prop, needle) in [
        ("shared", "shared:"),
        ("unbindable", "unbindable"),
        ("private", ""),
    ] {
        env.set_config(|c| c["linux"]["rootfsPropagation"] = json!(prop));
        let out = env.run(&format!("prop-{prop}"), &["cat", "/proc/self/mountinfo"]);
        assert!(out.status.success(), "{prop}: {}", stderr(&out));
        let info = stdout(&out);
        let line = info
            .lines()
            .find(|l| l.split(' ').nth(4) == Some("/"))
            .unwrap_or_else(|| panic!("no root mount in {info}"))
            .to_string();
        if needle.is_empty() {
            assert!(
                !line.contains("shared:") && !line.contains("master:"),
                "{prop}: {line}"
            );
        } else {
            assert!(line.contains(needle), "{prop}: {line}");
        }
    }
    env.assert_nothing_left("propagation");
}

#[test]
fn device_rules_limit_what_the_container_may_create_and_open() {
    // Enforced by the eBPF device filter on the container's cgroup2 directory (also on this
    // hybrid host, whose cgroup2 has no controllers: device programs need none).
    let mut env = Env::new();
    env.set_config(|c| {
        c["root"]["readonly"] = json!(false);
        c["linux"]["resources"]["devices"] = json!([{"allow": false, "access": "rwm"}]);
        c["linux"]["devices"] =
            json!([{"path": "/dev/given", "type": "c", "major": 1, "minor": 11}]);
    });
    env.set_config(|c| {
        let caps = &mut c["process"]["capabilities"];
        for set in ["bounding", "effective", "permitted"] {
            caps[set].as_array_mut().unwrap().push(json!("CAP_MKNOD"));
        }
    });
    // With CAP_MKNOD, only the devices cgroup stands between the process and /dev/mem.
    let out = env.run(
        "devices",
        &[
            "sh",
            "-c",
            "echo x > /dev/null && echo null-ok; mknod /null2 c 1 3 && echo null-mknod-ok; \
             mknod /dev/mem2 c 1 1; echo mknod=$?; stat -c %t:%T /dev/given",
        ],
    );
    let text = stdout(&out) + &stderr(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("null-ok"),
        "default devices stay usable: {text}"
    );
    assert!(
        text.contains("mknod=1"),
        "mknod of a denied device worked: {text}"
    );
    assert!(text.contains("1:b"), "the given device exists: {text}");
}

#[test]
fn joins_a_mount_namespace_by_path_but_never_the_runtimes_own() {
    let mut env = Env::new();
    let mut holder = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sleep", "1000"])
        .spawn()
        .unwrap();
    let path = format!("/proc/{}/ns/mnt", holder.id());
    let own = fs::read_link("/proc/self/ns/mnt").unwrap();
    wait_for(
        || fs::read_link(&path).map(|l| l != own).unwrap_or(false),
        "holder's mount namespace",
    );
    let theirs = fs::read_link(&path).unwrap();
    let set_mnt = |env: &Env, p: &str| {
        env.set_config(|c| {
            for n in c["linux"]["namespaces"].as_array_mut().unwrap() {
                if n["type"] == "mount" {
                    n["path"] = json!(p);
                }
            }
        })
    };
    set_mnt(&env, &path);
    let out = env.run("joinmnt", &["readlink", "/proc/self/ns/mnt"]);
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), theirs.to_string_lossy());
    // The runtime's own namespace (here: the host's) is refused before anything is made.
    set_mnt(&env, "/proc/self/ns/mnt");
    env.set_args(&["true"]);
    let id = env.id("ownmnt");
    let b = env.bundle().to_str().unwrap().to_string();
    let out = env.runc(&["create", "--bundle", &b, &id]);
    assert!(
        !out.status.success() && stderr(&out).contains("mount namespace"),
        "{}",
        stderr(&out)
    );
    env.assert_nothing_left("own mount namespace");
}

#[test]
fn idmapped_bind_mounts_show_mapped_owners() {
    let mut env = Env::new();
    let src = env.dir.path().join("idmap-src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("file"), "x").unwrap();
    let map = json!([{"containerID": 0, "hostID": 1234, "size": 1}]);
    env.set_config(|c| {
        c["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/data", "type": "bind", "source": src,
            "options": ["rbind", "ridmap"], "uidMappings": map, "gidMappings": map,
        }));
    });
    let out = env.run("idmap", &["stat", "-c", "%u:%g", "/data/file", "/data/sub"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).lines().collect::<Vec<_>>(),
        ["1234:1234", "1234:1234"]
    );
    // The source itself is untouched.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(fs::metadata(src.join("file")).unwrap().uid(), 0);

    // Mappings for one of uid/gid only are refused before anything is made.
    env.set_config(|c| {
        let m = c["mounts"].as_array_mut().unwrap().last_mut().unwrap();
        m.as_object_mut().unwrap().remove("gidMappings");
    });
    env.set_args(&["true"]);
    let id = env.id("idmap-bad");
    let b = env.bundle().to_str().unwrap().to_string();
    let out = env.runc(&["create", "--bundle", &b, &id]);
    assert!(
        !out.status.success() && stderr(&out).contains("gidMappings"),
        "{}",
        stderr(&out)
    );
    env.assert_nothing_left("idmap");
}

#[test]
fn a_time_namespace_gets_its_clock_offsets() {
    let mut env = Env::new();
    let year = 365 * 86400;
    env.set_config(|c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "time"}));
        c["linux"]["timeOffsets"] = json!({"boottime": {"secs": year, "nanosecs": 0}});
    });
    let out = env.run(
        "timens",
        &["sh", "-c", "cat /proc/uptime; readlink /proc/self/ns/time"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let uptime: f64 = text.split_whitespace().next().unwrap().parse().unwrap();
    let host: f64 = fs::read_to_string("/proc/uptime")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        uptime >= year as f64 && uptime < year as f64 + host + 60.0,
        "{text}"
    );
    let host_ns = fs::read_link("/proc/self/ns/time").unwrap();
    assert_ne!(text.lines().nth(1).unwrap(), host_ns.to_string_lossy());
    // exec joins the same time namespace.
    let (id, _) = started(&mut env, "timens-exec", &["sleep", "1000"]);
    let out = env.runc(&["exec", &id, "cat", "/proc/uptime"]);
    let up: f64 = stdout(&out)
        .split_whitespace()
        .next()
        .unwrap_or("0")
        .parse()
        .unwrap();
    assert!(
        up >= year as f64,
        "exec outside the time namespace: {}",
        stdout(&out)
    );
    assert!(env.runc(&["delete", "--force", &id]).status.success());

    // Offsets without a time namespace are refused, naming the field.
    env.set_config(|c| {
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != "time");
    });
    env.set_args(&["true"]);
    let id = env.id("timens-bad");
    let b = env.bundle().to_str().unwrap().to_string();
    let out = env.runc(&["create", "--bundle", &b, &id]);
    assert!(
        !out.status.success() && stderr(&out).contains("linux.timeOffsets"),
        "{}",
        stderr(&out)
    );
    env.assert_nothing_left("time namespace");
}

#[test]
fn spec_settings_reach_the_process() {
    let mut env = Env::new();
    env.set_config(|c| {
        c["hostname"] = json!("podhost");
        c["domainname"] = json!("poddomain");
        c["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
        c["process"]["oomScoreAdj"] = json!(123);
        c["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 512}]);
        c["mounts"].as_array_mut().unwrap().push(
            json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
                          "options": ["nosuid", "size=1m"]}),
        );
    });
    let out = env.run(
        "settings",
        &[
            "sh",
            "-c",
            "hostname; cat /proc/sys/kernel/domainname /proc/sys/net/ipv4/ip_forward \
             /proc/self/oom_score_adj; ulimit -n; ulimit -Hn; grep ' /scratch ' /proc/self/mounts; \
             touch /proc/sys/kernel/x 2>/dev/null && echo proc-sys-writable; \
             head -c1 /proc/kcore 2>/dev/null | wc -c",
        ],
    );
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[..6],
        ["podhost", "poddomain", "1", "123", "512", "1024"],
        "{text}"
    );
    assert!(
        lines[6].contains("tmpfs") && lines[6].contains("size=1024k"),
        "{text}"
    );
    assert!(!text.contains("proc-sys-writable"), "{text}");
    assert_eq!(
        lines.last().unwrap().trim(),
        "0",
        "masked /proc/kcore readable: {text}"
    );
}

#[test]
fn user_namespace_no_pivot_and_preserved_fds() {
    let mut env = Env::new();
    // Root in the container is uid 100000 on the host: the rootfs must be reachable and owned
    // by it, as with any user-namespaced container.
    env.user_namespaced();
    let out = env.run("userns", &["sh", "-c", "id -u; cat /proc/self/uid_map"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().next(), Some("0"));
    assert!(
        text.split_whitespace()
            .collect::<Vec<_>>()
            .ends_with(&["0", "100000", "65536"]),
        "{text}"
    );

    // --no-pivot: MS_MOVE + chroot instead of pivot_root; the container still sees its rootfs.
    env.set_config(|c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|n| n["type"] != "user");
        c.as_object_mut().unwrap()["linux"]
            .as_object_mut()
            .unwrap()
            .remove("uidMappings");
        c.as_object_mut().unwrap()["linux"]
            .as_object_mut()
            .unwrap()
            .remove("gidMappings");
    });
    env.set_args(&["ls", "/bin/busybox"]);
    let id = env.id("nopivot");
    let b = env.bundle().to_str().unwrap().to_string();
    let out = env.runc(&["run", "--no-pivot", "--no-new-keyring", "--bundle", &b, &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "/bin/busybox");

    // --preserve-fds 1: fd 3 reaches the container.
    let target = env.dir.path().join("fd3.txt");
    let file = fs::File::create(&target).unwrap();
    let raw = std::os::fd::AsRawFd::as_raw_fd(&file);
    env.set_args(&["sh", "-c", "echo through-fd3 >&3"]);
    let id = env.id("fds");
    let mut cmd = env.command(&["run", "--preserve-fds", "1", "--bundle", &b, &id]);
    // SAFETY: dup2/fcntl in the child before exec: fd 3 without CLOEXEC.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            // dup2 onto itself keeps CLOEXEC, so clear it explicitly.
            if libc::dup2(raw, 3) < 0 || libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = run_with_files(cmd, env.dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fs::read_to_string(&target).unwrap(), "through-fd3\n");
    env.assert_nothing_left("userns/no-pivot/fds");
}

#[test]
fn kill_all_signals_every_process_in_the_container() {
    let mut env = Env::new();
    let (id, pid) = started(
        &mut env,
        "killall",
        &["sh", "-c", "sleep 1000 & sleep 1000 & wait"],
    );
    wait_for(
        || {
            serde_json::from_slice::<Vec<i64>>(&env.runc(&["ps", "--format", "json", &id]).stdout)
                .map(|p| p.len() == 3)
                .unwrap_or(false)
        },
        "three processes",
    );
    let out = env.runc(&["kill", "--all", &id, "KILL"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for(
        || state(&env, &id)["status"] == "stopped",
        "all processes gone",
    );
    assert!(podlet_runtime::container::process_start_time(pid as i32).is_none());
    assert!(env.runc(&["delete", &id]).status.success());
    env.assert_nothing_left("kill --all");
}

/// The cgroup directories `podlet-runc` made for container `id` (from its state file).
fn container_cgroup_dirs(env: &Env, id: &str) -> Vec<std::path::PathBuf> {
    let st: Value =
        serde_json::from_slice(&fs::read(env.root().join(id).join("state.json")).unwrap()).unwrap();
    st["cgroupDirs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().into())
        .collect()
}

#[test]
fn exec_cgroup_picks_an_existing_sub_cgroup_and_nothing_outside() {
    let mut env = Env::new();
    let (id, _) = started(&mut env, "exec-cgroup", &["sleep", "1000"]);
    let dirs = container_cgroup_dirs(&env, &id);
    assert!(!dirs.is_empty());
    /// Removes the sub-cgroups this test made, also when it fails (before `Env` deletes the
    /// container and its cgroups).
    struct Subs(Vec<std::path::PathBuf>);
    impl Drop for Subs {
        fn drop(&mut self) {
            for d in &self.0 {
                let _ = fs::remove_dir(d);
            }
        }
    }
    let subs = Subs(dirs.iter().map(|d| d.join("sub")).collect());
    for d in &subs.0 {
        fs::create_dir(d).unwrap();
    }
    let out = env.runc(&["exec", "--cgroup", "sub", &id, "cat", "/proc/self/cgroup"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    // Every hierarchy's line ends in the sub-cgroup (the container has its own cgroup
    // namespace or not: either way the path ends with /sub).
    for line in text.lines().filter(|l| !l.ends_with(":/") && !l.is_empty()) {
        assert!(line.ends_with("/sub"), "{line} (all: {text})");
    }
    // Hostile or missing paths are refused before anything runs.
    for (bad, why) in [
        ("../x", "no '..'"),
        ("/abs", "no '..'"),
        ("nosuch", "find sub-cgroup"),
        ("fly:sub", "no hierarchy has that controller"),
    ] {
        let out = env.runc(&["exec", "--cgroup", bad, &id, "true"]);
        assert!(!out.status.success(), "--cgroup {bad} accepted");
        assert!(
            stderr(&out).contains(why),
            "--cgroup {bad}: {}",
            stderr(&out)
        );
    }
    assert!(env.runc(&["delete", "--force", &id]).status.success());
    env.assert_nothing_left("exec --cgroup");
}

#[test]
fn exec_into_a_paused_container_needs_ignore_paused() {
    let mut env = Env::new();
    env.set_config(|c| c["root"]["readonly"] = json!(false));
    let (id, _) = started(&mut env, "exec-paused", &["sleep", "1000"]);
    assert!(env.runc(&["pause", &id]).status.success());
    let out = env.runc(&["exec", &id, "true"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--ignore-paused"), "{}", stderr(&out));
    // With the flag the process is started, frozen with the container until it resumes.
    let mut exec = env
        .command(&[
            "exec",
            "--ignore-paused",
            &id,
            "sh",
            "-c",
            "echo ran > /ran",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        exec.try_wait().unwrap().is_none(),
        "the exec'd process ran in a paused container"
    );
    assert!(!env.bundle().join("rootfs/ran").exists());
    assert!(env.runc(&["resume", &id]).status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = exec.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = exec.kill();
            let _ = exec.wait();
            panic!("exec did not finish after resume");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success());
    assert_eq!(
        fs::read_to_string(env.bundle().join("rootfs/ran")).unwrap(),
        "ran\n"
    );
    assert!(env.runc(&["delete", "--force", &id]).status.success());
    env.assert_nothing_left("exec --ignore-paused");
}

#[test]
fn no_runtime_fd_lets_the_process_path_reach_the_host() {
    // CVE-2024-21626 class: a directory fd the runtime still holds at execve would let
    // process.args[0] = /proc/self/fd/N/../../.. resolve on the host. A script only the host
    // has stands for "the host" (a static busybox named `echo` outside the rootfs): it must
    // never run, whatever N is.
    let mut env = Env::new();
    let host_only = env.dir.path().join("host-only");
    fs::create_dir(&host_only).unwrap();
    fs::copy("/bin/busybox", host_only.join("echo")).unwrap();
    let marker = host_only.join("echo");
    let rel = marker
        .strip_prefix("/")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    for n in 3..=12 {
        let program = format!("/proc/self/fd/{n}/{}{rel}", "../".repeat(40));
        let out = env.run(&format!("fd-escape-{n}"), &[&program, "ESCAPED"]);
        let all = stdout(&out) + &stderr(&out);
        assert!(!all.contains("ESCAPED"), "fd {n} reached the host: {all}");
        assert!(!out.status.success(), "fd {n}: {all}");
    }
    // The same through `exec` into a running container.
    let (id, _) = started(&mut env, "fd-escape-exec", &["sleep", "1000"]);
    for n in 3..=12 {
        let program = format!("/proc/self/fd/{n}/{}{rel}", "../".repeat(40));
        let out = env.runc(&["exec", &id, &program, "ESCAPED"]);
        let all = stdout(&out) + &stderr(&out);
        assert!(
            !all.contains("ESCAPED"),
            "exec: fd {n} reached the host: {all}"
        );
    }
    assert!(env.runc(&["delete", "--force", &id]).status.success());
    env.assert_nothing_left("fd escape");
}

#[test]
fn devices_fail_closed_without_a_deny_all_rule_or_any_rule() {
    // runc's default allow-list (null, zero, …) and nothing else: a node the container makes
    // for /dev/net/tun (10:200, which this host lets its own processes open) can be neither
    // made nor opened, whatever the spec's rule list looks like, even with CAP_MKNOD.
    let mut env = Env::new();
    let script = "mknod /node c 10 200; (exec 3</node) && echo node-opened; \
                  echo x > /dev/null && echo null-ok; true";
    for (name, rules) in [
        ("no-rules", None),
        (
            "allow-only",
            Some(json!([{"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}])),
        ),
    ] {
        env.set_config(|c| {
            c["root"]["readonly"] = json!(false);
            let caps = json!([
                "CAP_MKNOD",
                "CAP_KILL",
                "CAP_AUDIT_WRITE",
                "CAP_NET_BIND_SERVICE"
            ]);
            c["process"]["capabilities"] =
                json!({"bounding": caps, "effective": caps, "permitted": caps});
            let res = &mut c["linux"]["resources"];
            match &rules {
                Some(r) => res["devices"] = r.clone(),
                None => {
                    if let Some(o) = res.as_object_mut() {
                        o.remove("devices");
                    }
                }
            }
        });
        let _ = fs::remove_file(env.bundle().join("rootfs/node"));
        let out = env.run(name, &["sh", "-c", script]);
        let text = stdout(&out) + &stderr(&out);
        assert!(text.contains("null-ok"), "{name}: {text}");
        assert!(
            !text.contains("node-opened"),
            "{name}: an unlisted device opened: {text}"
        );
    }
    env.assert_nothing_left("devices");
}
