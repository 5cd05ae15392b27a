//! Host tier: `podlet image import|load`, `images`, `rmi`, `image prune`, and `podlet run`
//! from an imported busybox image (overlay snapshot mounted inside the container's own mount
//! namespace), with the image config and the docker-style flags applied.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use podlet_testkit::busybox;

struct Podlet {
    dir: tempfile::TempDir,
}

impl Podlet {
    fn new() -> Podlet {
        Podlet {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_podlet"));
        c.arg("--root")
            .arg(self.dir.path().join("data"))
            .arg("--state")
            .arg(self.dir.path().join("state"))
            .arg("--cgroup-root")
            .arg(format!("podlet-images-test-{}", std::process::id()))
            .args(args);
        c
    }

    /// Runs podlet with stdio in files (a container inherits them).
    fn run(&self, args: &[&str]) -> Output {
        let out_p = self.dir.path().join("out");
        let err_p = self.dir.path().join("err");
        let status = self
            .cmd(args)
            .stdin(std::process::Stdio::null())
            .stdout(fs::File::create(&out_p).unwrap())
            .stderr(fs::File::create(&err_p).unwrap())
            .status()
            .unwrap();
        Output {
            status,
            stdout: fs::read(&out_p).unwrap(),
            stderr: fs::read(&err_p).unwrap(),
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for Podlet {
    /// Removes every container the test left (running ones included), even when it failed.
    fn drop(&mut self) {
        let names: Vec<String> = fs::read_dir(self.data().join("containers"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        if !names.is_empty() {
            let mut args = vec!["rm", "--force"];
            args.extend(names.iter().map(String::as_str));
            let _ = self.run(&args);
        }
    }
}

/// A fresh podlet root with the busybox image imported as `busybox`.
fn with_busybox() -> (Podlet, PathBuf) {
    let p = Podlet::new();
    let tar = busybox_tar(p.dir.path());
    let out = p.run(&["image", "import", tar.to_str().unwrap(), "busybox"]);
    assert!(out.status.success(), "{}", err(&out));
    (p, tar)
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A busybox root filesystem tar with an /etc/passwd, gzip-compressed.
fn busybox_tar(dir: &Path) -> PathBuf {
    let root = busybox::rootfs(
        &dir.join("rootfs"),
        &[
            "sh", "echo", "cat", "ls", "id", "pwd", "touch", "hostname", "true", "sleep", "mkdir",
            "httpd",
        ],
    );
    busybox::with_users(&root);
    busybox::tar(&root, &dir.join("busybox.tar.gz"))
}

#[test]
fn run_applies_flags_and_keeps_layers_pristine() {
    let p = Podlet::new();
    let tar = busybox_tar(p.dir.path());
    let out = p.run(&["image", "import", tar.to_str().unwrap(), "busybox"]);
    assert!(out.status.success(), "{}", err(&out));
    let out = p.run(&["images"]);
    assert!(
        text(&out).contains("docker.io/library/busybox") && text(&out).contains("latest"),
        "{}",
        text(&out)
    );

    let vol = p.dir.path().join("vol");
    fs::create_dir(&vol).unwrap();
    fs::write(vol.join("in.txt"), "from the host").unwrap();
    let volume = format!("{}:/data:ro", vol.display());
    let out = p.run(&[
        "run", "--rm", "-e", "FOO=bar", "-w", "/tmp", "-u", "nobody", "--hostname", "box",
        "-v", &volume, "busybox", "sh", "-c",
        "echo foo=$FOO; pwd; id -u; hostname; cat /data/in.txt; echo; touch /data/x 2>/dev/null || echo ro-volume",
    ]);
    assert!(out.status.success(), "{}", err(&out));
    let lines: Vec<String> = text(&out).lines().map(str::to_string).collect();
    assert_eq!(
        lines,
        [
            "foo=bar",
            "/tmp",
            "65534",
            "box",
            "from the host",
            "ro-volume"
        ],
        "{}",
        err(&out)
    );

    // The container's exit code is podlet's; writes go to its own upper layer only.
    let out = p.run(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "touch /bin/made-in-container; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7), "{}", err(&out));
    let layers = p.data().join("layers");
    for layer in fs::read_dir(&layers).unwrap().flatten() {
        assert!(
            !layer.path().join("bin/made-in-container").exists(),
            "a shared layer was written"
        );
    }
    assert_eq!(
        fs::read_dir(p.data().join("containers")).unwrap().count(),
        0,
        "--rm left a snapshot"
    );
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(p.dir.path().to_str().unwrap()),
        "a mount is visible on the host"
    );

    let out = p.run(&[
        "run",
        "--rm",
        "--read-only",
        "busybox",
        "sh",
        "-c",
        "touch /x || echo read-only",
    ]);
    assert!(
        text(&out).contains("read-only"),
        "{}{}",
        text(&out),
        err(&out)
    );
}

#[test]
fn named_containers_ps_rm_and_bad_input() {
    let p = Podlet::new();
    let tar = busybox_tar(p.dir.path());
    assert!(p
        .run(&["image", "import", tar.to_str().unwrap(), "busybox:1"])
        .status
        .success());
    let out = p.run(&["run", "--name", "keep", "busybox:1", "echo", "kept"]);
    assert!(out.status.success(), "{}", err(&out));
    assert_eq!(text(&out), "kept\n");
    let ps = p.run(&["ps", "-a", "--format", "json"]);
    let rows: serde_json::Value = serde_json::from_slice(&ps.stdout).unwrap();
    assert_eq!(rows[0]["name"], "keep");
    assert_eq!(rows[0]["status"], "stopped");
    let dup = p.run(&["run", "--name", "keep", "busybox:1", "true"]);
    assert!(
        !dup.status.success() && err(&dup).contains("already in use"),
        "{}",
        err(&dup)
    );
    let inuse = p.run(&["rmi", "busybox:1"]);
    assert!(
        !inuse.status.success() && err(&inuse).contains("in use"),
        "{}",
        err(&inuse)
    );
    assert!(p.run(&["rm", "keep"]).status.success());
    let gone = p.run(&["rm", "keep"]);
    assert!(!gone.status.success() && err(&gone).contains("no such container"));

    for (args, needle) in [
        (vec!["run", "--rm", "no-such-image"], "not found"),
        (vec!["run", "--rm", "UPPER:case"], "invalid image reference"),
        (vec!["image", "import", "/no/such.tar", "x"], "no such file"),
        (
            vec!["run", "--rm", "-v", "relative", "busybox:1", "true"],
            "SRC:DST",
        ),
        (
            vec!["run", "--rm", "-u", "ghost", "busybox:1", "true"],
            "ghost",
        ),
        (vec!["run", "--rm", "busybox:1"], "no command"),
    ] {
        let out = p.run(&args);
        assert!(!out.status.success(), "{args:?}");
        assert!(err(&out).contains(needle), "{args:?}: {}", err(&out));
    }
    let not_tar = p.dir.path().join("not.tar");
    fs::write(&not_tar, "hello").unwrap();
    let out = p.run(&["image", "import", not_tar.to_str().unwrap(), "junk"]);
    assert!(
        !out.status.success() && err(&out).contains("not a tar"),
        "{}",
        err(&out)
    );
    assert_eq!(
        fs::read_dir(p.data().join("containers")).unwrap().count(),
        0
    );

    // rmi then prune frees the blobs and layers.
    assert!(p.run(&["rmi", "busybox:1"]).status.success());
    let out = p.run(&["image", "prune"]);
    assert!(
        out.status.success() && text(&out).contains("Removed"),
        "{}",
        text(&out)
    );
    assert_eq!(
        fs::read_dir(p.data().join("blobs/sha256")).unwrap().count(),
        0
    );
    assert_eq!(fs::read_dir(p.data().join("layers")).unwrap().count(), 0);
}

#[test]
fn loads_oci_layouts_and_docker_archives_that_podman_writes() {
    let _host = podlet_testkit::host_dirs::HostDirsGuard::new();
    let p = Podlet::new();
    let tar = busybox_tar(p.dir.path());
    let pm = p.dir.path().join("podman");
    // vfs: podman makes no mounts; import/save run no container, so no cgroups either.
    let podman = |args: &[&str]| {
        let out = Command::new("podman")
            .arg("--root")
            .arg(pm.join("root"))
            .arg("--runroot")
            .arg(pm.join("run"))
            .arg("--tmpdir")
            .arg(pm.join("tmp"))
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"])
            .args(args)
            .output()
            .expect("podman installed");
        assert!(out.status.success(), "podman {args:?}: {}", err(&out));
    };
    podman(&["import", tar.to_str().unwrap(), "localhost/bb:1"]);
    let saves = [
        ("oci-archive", p.dir.path().join("oci.tar")),
        ("docker-archive", p.dir.path().join("docker.tar")),
        ("oci-dir", p.dir.path().join("ocidir")),
    ];
    for (format, path) in &saves {
        podman(&[
            "save",
            "--format",
            format,
            "-o",
            path.to_str().unwrap(),
            "localhost/bb:1",
        ]);
    }
    for (format, path) in &saves {
        let out = p.run(&["image", "load", "-i", path.to_str().unwrap()]);
        assert!(out.status.success(), "{format}: {}", err(&out));
        assert!(
            text(&out).contains("localhost/bb:1"),
            "{format}: {}",
            text(&out)
        );
        let out = p.run(&["run", "--rm", "localhost/bb:1", "echo", format]);
        assert_eq!(text(&out).trim(), *format, "{}", err(&out));
    }
    // A name given on load wins over the archive's.
    let out = p.run(&[
        "image",
        "load",
        "-i",
        saves[0].1.to_str().unwrap(),
        "--name",
        "mine:v2",
    ]);
    assert!(out.status.success(), "{}", err(&out));
    let out = p.run(&["images", "--format", "json"]);
    let imgs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = imgs
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert!(
        names.contains(&"docker.io/library/mine:v2") && names.contains(&"localhost/bb:1"),
        "{names:?}"
    );
    // Not an image archive at all.
    let junk = p.dir.path().join("junk.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(p.dir.path())
        .arg("-cf")
        .arg(&junk)
        .arg("rootfs/etc")
        .status()
        .unwrap();
    assert!(st.success());
    let out = p.run(&["image", "load", "-i", junk.to_str().unwrap()]);
    assert!(
        !out.status.success()
            && err(&out).contains("neither an OCI image layout nor a docker save"),
        "{}",
        err(&out)
    );
}

fn wait_until(mut f: impl FnMut() -> bool, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn a_detached_container_outlives_the_cli_and_reports_later() {
    let (p, _) = with_busybox();
    let out = p.run(&[
        "run",
        "-d",
        "--name",
        "bg",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2; sleep 1; echo more; exit 4",
    ]);
    assert!(out.status.success(), "{}", err(&out));
    assert_eq!(text(&out), "bg\n");
    // The CLI has exited; the container keeps running under its monitor.
    let status = |p: &Podlet| -> serde_json::Value {
        let out = p.run(&["ps", "-a", "--format", "json"]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()[0].clone()
    };
    // logs -f follows the running container and returns when it exits.
    let follow = p.run(&["logs", "-f", "bg"]);
    assert!(text(&follow).contains("out\nmore\n"), "{}", text(&follow));
    wait_until(|| status(&p)["statusText"] == "Exited (4)", "the exit code");
    let logs = p.run(&["logs", "bg"]);
    assert_eq!(text(&logs), "out\nmore\n");
    assert_eq!(err(&logs), "err\n");
    let inspect: serde_json::Value =
        serde_json::from_slice(&p.run(&["inspect", "bg"]).stdout).unwrap();
    assert_eq!(inspect[0]["State"]["ExitCode"], 4);
    assert!(p.run(&["rm", "bg"]).status.success());

    // exec and stop on a long-running detached container.
    let out = p.run(&["run", "-d", "--name", "long", "busybox", "sleep", "100"]);
    assert!(out.status.success(), "{}", err(&out));
    let out = p.run(&[
        "exec",
        "-e",
        "X=1",
        "long",
        "sh",
        "-c",
        "echo in-exec $X; exit 5",
    ]);
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(text(&out), "in-exec 1\n");
    let busy = p.run(&["rm", "long"]);
    assert!(
        !busy.status.success() && err(&busy).contains("--force"),
        "{}",
        err(&busy)
    );
    assert!(p.run(&["stop", "-t", "1", "long"]).status.success());
    assert_eq!(status(&p)["statusText"], "Exited (137)");
    assert!(p.run(&["rm", "long"]).status.success());

    // --rm with -d: the monitor removes everything after the exit.
    assert!(p
        .run(&["run", "-d", "--rm", "--name", "gone", "busybox", "true"])
        .status
        .success());
    wait_until(
        || !p.data().join("containers/gone").exists(),
        "the snapshot removal",
    );
    // A container that cannot start reports why and leaves nothing.
    let out = p.run(&["run", "-d", "--name", "bad", "busybox", "/no/such/program"]);
    assert!(
        !out.status.success() && err(&out).contains("/no/such/program"),
        "{}",
        err(&out)
    );
    assert_eq!(
        fs::read_dir(p.data().join("containers")).unwrap().count(),
        0
    );
}

#[test]
fn an_interactive_terminal_works_and_follows_resizes() {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    let (p, _) = with_busybox();
    let size = |rows: u16, cols: u16| nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // podlet's own terminal is a pty this test holds the master of.
    let pty = nix::pty::openpty(Some(&size(24, 80)), None).unwrap();
    let slave = || std::process::Stdio::from(pty.slave.try_clone().unwrap());
    let mut child = p
        .cmd(&["run", "--rm", "-it", "busybox", "sh"])
        .stdin(slave())
        .stdout(slave())
        .stderr(slave())
        .spawn()
        .unwrap();
    let mut master = fs::File::from(pty.master);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let seen = seen.clone();
        let mut m = master.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            while let Ok(n) = m.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let wait_for = |needle: &str| {
        wait_until(|| seen.lock().unwrap().contains(needle), needle);
    };
    master
        .write_all(b"stty size; echo marker-$((1+2))\n")
        .unwrap();
    wait_for("marker-3");
    assert!(
        seen.lock().unwrap().contains("24 80"),
        "{}",
        seen.lock().unwrap()
    );
    // Resize podlet's terminal: the container's follows.
    // SAFETY: TIOCSWINSZ reads a live winsize.
    unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size(30, 100)) };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGWINCH,
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    master
        .write_all(b"stty size; echo marker-$((2+2))\n")
        .unwrap();
    wait_for("marker-4");
    assert!(
        seen.lock().unwrap().contains("30 100"),
        "{}",
        seen.lock().unwrap()
    );
    master.write_all(b"exit 7\n").unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(7), "{}", seen.lock().unwrap());
    drop(master);
    drop(pty.slave);
    let _ = reader.join();
}

#[test]
fn published_ports_reach_the_container_without_iptables() {
    use std::io::{Read, Write};
    let (p, _) = with_busybox();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let publish = format!("127.0.0.1:{port}:8080");
    let out = p.run(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        &publish,
        "busybox",
        "sh",
        "-c",
        "mkdir -p /tmp/w && echo hello-port > /tmp/w/index.html && exec httpd -f -p 8080 -h /tmp/w",
    ]);
    assert!(out.status.success(), "{}", err(&out));
    let mut body = String::new();
    wait_until(
        || {
            let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                return false;
            };
            let _ = c.set_read_timeout(Some(std::time::Duration::from_secs(2)));
            let _ = c.write_all(b"GET /index.html HTTP/1.0\r\n\r\n");
            body.clear();
            let _ = c.read_to_string(&mut body);
            body.contains("hello-port")
        },
        "the published port",
    );
    // The same port twice: the second run fails before anything starts.
    let out = p.run(&["run", "--rm", "-p", &publish, "busybox", "true"]);
    assert!(
        !out.status.success() && err(&out).contains("cannot bind"),
        "{}",
        err(&out)
    );
    let out = p.run(&["run", "--rm", "-p", "nonsense", "busybox", "true"]);
    assert!(
        !out.status.success() && err(&out).contains("--publish"),
        "{}",
        err(&out)
    );
    assert!(p.run(&["rm", "-f", "web"]).status.success());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the proxy outlived the container"
    );
}

#[test]
fn exec_it_signals_and_a_full_disk() {
    use std::io::{Read, Write};
    let (p, tar) = with_busybox();

    // exec -it: an interactive shell in a running container, on a pty this test holds.
    assert!(p
        .run(&["run", "-d", "--name", "box", "busybox", "sleep", "100"])
        .status
        .success());
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = || std::process::Stdio::from(pty.slave.try_clone().unwrap());
    let mut child = p
        .cmd(&["exec", "-it", "box", "sh"])
        .stdin(slave())
        .stdout(slave())
        .stderr(slave())
        .spawn()
        .unwrap();
    let mut master = fs::File::from(pty.master);
    master
        .write_all(b"test -t 0 && echo tty-$((3*3)); exit 6\n")
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(6));
    drop(pty.slave);
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = master.read(&mut buf) {
        if n == 0 {
            break;
        }
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        if seen.contains("tty-9") {
            break;
        }
    }
    assert!(seen.contains("tty-9"), "{seen}");
    assert!(p.run(&["rm", "-f", "box"]).status.success());

    // SIGTERM to a foreground `podlet run` reaches the container.
    let mut run = p
        .cmd(&[
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "trap 'echo got-term; exit 9' TERM; echo ready; while :; do sleep 0.1; done",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = run.stdout.take().unwrap();
    let mut first = [0u8; 6];
    out.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"ready\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(run.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert_eq!(run.wait().unwrap().code(), Some(9));
    assert!(rest.contains("got-term"), "{rest}");

    // A full disk: importing into a 64 KiB store fails clearly and stores nothing. The small
    // filesystem is a tmpfs in a mount namespace of this test's own.
    let small = p.dir.path().join("small");
    fs::create_dir(&small).unwrap();
    let script = format!(
        "mount -t tmpfs -o size=64k tmpfs {s} && {podlet} --root {s}/data image import {tar} big; echo rc=$?; ls {s}/data/blobs/sha256 | wc -l; ls {s}/data/tmp | wc -l",
        s = small.display(),
        podlet = env!("CARGO_BIN_EXE_podlet"),
        tar = tar.display()
    );
    let o = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let all = text(&o) + &err(&o);
    assert!(all.contains("No space left on device"), "{all}");
    assert!(all.contains("rc=1"), "{all}");
    let stdout = text(&o);
    let counts: Vec<&str> = stdout.lines().filter(|l| !l.starts_with("rc=")).collect();
    assert_eq!(counts, ["0", "0"], "blobs or temporary files left: {all}");
}

/// An import reads a file to its end: a device, FIFO or socket never ends, so it is refused
/// up front (before, `image import /dev/zero x` read zeros forever).
#[test]
fn imports_refuse_what_is_not_a_regular_file() {
    let p = Podlet::new();
    for args in [
        vec!["image", "import", "/dev/zero", "zero"],
        vec!["image", "load", "-i", "/dev/zero"],
    ] {
        let mut child = p
            .cmd(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{args:?} still reading after 20 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let mut msg = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut msg).unwrap();
        assert!(!status.success(), "{args:?}");
        assert!(msg.contains("not a regular file"), "{args:?}: {msg}");
    }
}

/// Runs `cmd args` as the unprivileged user `nobody` (uid/gid 65534).
fn as_nobody(cmd: &str, args: &[&Path]) -> Output {
    use std::os::unix::process::CommandExt;
    // Through sh, so that a program nobody may not reach is an exit status, not a spawn error.
    Command::new("sh")
        .args(["-c", "exec \"$0\" \"$@\"", cmd])
        .args(args)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap()
}

#[test]
fn the_store_is_closed_to_unprivileged_host_users() {
    use std::os::unix::fs::PermissionsExt;
    let (p, _) = with_busybox();
    // Only the store's own modes may stand between a host user and its files.
    fs::set_permissions(p.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let out = p.run(&[
        "run",
        "-d",
        "--name",
        "secretive",
        "-e",
        "API_TOKEN=hunter2",
        "busybox",
        "sh",
        "-c",
        "cp /bin/busybox /planted; chmod 4755 /planted; sleep 1000",
    ]);
    assert!(out.status.success(), "{}", err(&out));
    let mode = |rel: &str| {
        fs::metadata(p.data().join(rel))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode(""), 0o711, "store root");
    for d in ["blobs", "layers", "containers", "tmp"] {
        assert_eq!(mode(d), 0o700, "{d}");
    }
    let container = p.data().join("containers/secretive");
    let config = container.join("config.json");
    assert!(fs::read_to_string(&config).unwrap().contains("hunter2"));
    let out = as_nobody("cat", &[&config]);
    assert!(
        !out.status.success(),
        "nobody read the container's config.json"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{out:?}"
    );
    let out = as_nobody("ls", &[&p.data().join("layers")]);
    assert!(!out.status.success(), "nobody listed the layers");
    // The setuid copy in the upper dir is out of reach too.
    let planted: Vec<PathBuf> = walk(&container)
        .into_iter()
        .filter(|f| f.file_name().is_some_and(|n| n == "planted"))
        .collect();
    assert!(!planted.is_empty(), "the container did not write /planted");
    let out = as_nobody(planted[0].to_str().unwrap(), &[Path::new("true")]);
    assert!(
        !out.status.success(),
        "nobody ran the planted setuid binary"
    );

    // A store made by an older podlet with open modes is closed when next opened.
    fs::set_permissions(p.data().join("layers"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(p.data(), fs::Permissions::from_mode(0o755)).unwrap();
    assert!(p.run(&["images"]).status.success());
    assert_eq!(mode("layers"), 0o700);
    assert_eq!(mode(""), 0o711);
    assert!(p.run(&["rm", "--force", "secretive"]).status.success());
}

/// Every file below `dir` (root reads them all).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn run_confines_with_a_default_seccomp_profile_and_takes_security_opts() {
    let p = Podlet::new();
    let root = busybox::rootfs(
        &p.dir.path().join("rootfs"),
        &[
            "sh", "grep", "unshare", "mkdir", "echo", "true", "cat", "mknod",
        ],
    );
    let tar = busybox::tar(&root, &p.dir.path().join("bb.tar.gz"));
    let out = p.run(&["image", "import", tar.to_str().unwrap(), "bb"]);
    assert!(out.status.success(), "{}", err(&out));
    let probe = "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; \
                 unshare -U true 2>/dev/null; echo userns=$?; \
                 mkdir /made 2>/dev/null; echo mkdir=$?";
    let run = |opts: &[&str]| -> String {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(opts);
        args.extend_from_slice(&["bb", "sh", "-c", probe]);
        let out = p.run(&args);
        assert!(out.status.success(), "{opts:?}: {}", err(&out));
        text(&out)
    };
    // By default: the runtime's profile (a new user namespace is refused), no_new_privs off.
    let t = run(&[]);
    assert!(t.contains("Seccomp:\t2"), "{t}");
    assert!(t.contains("NoNewPrivs:\t0"), "{t}");
    assert!(t.contains("userns=1"), "{t}");
    assert!(t.contains("mkdir=0"), "{t}");
    let t = run(&["--security-opt", "seccomp=unconfined"]);
    assert!(t.contains("Seccomp:\t0") && t.contains("userns=0"), "{t}");
    let t = run(&["--security-opt", "no-new-privileges"]);
    assert!(t.contains("NoNewPrivs:\t1"), "{t}");
    // A podman/Docker-format profile file: mkdir denied unless the container has SYS_ADMIN.
    let profile = p.dir.path().join("profile.json");
    fs::write(
        &profile,
        serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "archMap": [{"architecture": "SCMP_ARCH_X86_64",
                         "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]}],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                          "errnoRet": 13, "excludes": {"caps": ["CAP_SYS_ADMIN"]}}]
        })
        .to_string(),
    )
    .unwrap();
    let opt = format!("seccomp={}", profile.display());
    let t = run(&["--security-opt", &opt]);
    assert!(t.contains("mkdir=1") && t.contains("userns=0"), "{t}");
    let t = run(&["--security-opt", &opt, "--cap-add", "SYS_ADMIN"]);
    assert!(t.contains("mkdir=0"), "{t}");
    // Devices fail closed: even with CAP_MKNOD, a node outside the default list (here
    // /dev/net/tun's 10:200) can be neither made nor opened; /dev/null works.
    let out = p.run(&[
        "run", "--rm", "--cap-add", "MKNOD", "bb", "sh", "-c",
        "mknod /node c 10 200; (exec 3</node) && echo node-opened; echo x > /dev/null && echo null-ok",
    ]);
    let t = text(&out) + &err(&out);
    assert!(t.contains("null-ok") && !t.contains("node-opened"), "{t}");
    // Bad options name themselves and leave nothing behind.
    for (bad, why) in [
        ("seccomp=/nonexistent.json", "/nonexistent.json"),
        ("label=disable", "not supported"),
        ("fly", "expected seccomp="),
    ] {
        let out = p.run(&["run", "--rm", "--security-opt", bad, "bb", "true"]);
        assert!(!out.status.success(), "{bad} accepted");
        assert!(err(&out).contains(why), "{bad}: {}", err(&out));
    }
    let names = fs::read_dir(p.data().join("containers")).unwrap().count();
    assert_eq!(names, 0, "a refused run left a container");
}
