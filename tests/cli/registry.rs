//! Host tier: pull and push against a real registry — Debian's `docker-registry`, started by
//! the test on loopback — with skopeo as a second client; errors from the registry and
//! corrupt blobs are reported and leave nothing stored.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

/// A docker-registry on 127.0.0.1:<free port>, killed (by pid) on drop.
struct Registry {
    child: Child,
    port: u16,
    data: PathBuf,
}

impl Registry {
    fn start(dir: &Path) -> Registry {
        Registry::start_with(dir, "")
    }

    /// Starts a registry with extra YAML (e.g. an `auth:` section).
    fn start_with(dir: &Path, extra: &str) -> Registry {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let data = dir.join("registry-data");
        let cfg = dir.join("registry.yml");
        fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n{extra}",
                data.display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(std::process::Stdio::null())
            .stderr(fs::File::create(dir.join("registry.log")).unwrap())
            .spawn()
            .expect("docker-registry installed (scripts/install-deps.sh)");
        let r = Registry { child, port, data };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return r;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        panic!("docker-registry did not start");
    }

    fn host(&self) -> String {
        format!("localhost:{}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn podlet(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_podlet"))
        .arg("--root")
        .arg(root.join("data"))
        .arg("--state")
        .arg(root.join("state"))
        .arg("--cgroup-root")
        .arg(format!("podlet-registry-test-{}", std::process::id()))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn busybox_image(root: &Path) {
    let rootfs = podlet_testkit::busybox::rootfs(&root.join("rootfs"), &["sh", "echo", "cat"]);
    let tar = podlet_testkit::busybox::tar(&rootfs, &root.join("bb.tar"));
    let o = podlet(root, &["image", "import", tar.to_str().unwrap(), "bb:1"]);
    assert!(o.status.success(), "{}", err(&o));
}

#[test]
fn push_pull_by_tag_and_digest_and_run() {
    // skopeo keeps a blob-info cache under /var/lib/containers.
    let _host = podlet_testkit::host_dirs::HostDirsGuard::new();
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start(tmp.path());
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    busybox_image(&a);
    let dest = format!("{}/test/bb:1", reg.host());
    let o = podlet(&a, &["push", "bb:1", &dest]);
    assert!(o.status.success(), "{}", err(&o));
    let digest = out(&o).trim().to_string();
    assert!(digest.starts_with("sha256:"), "{digest}");
    // A second push finds every blob there.
    let o = podlet(&a, &["push", "bb:1", &dest]);
    assert!(
        o.status.success() && err(&o).matches("already present").count() == 2,
        "{}",
        err(&o)
    );

    // On a terminal the pull draws progress bars.
    let pty = nix::pty::openpty(None, None).unwrap();
    let st = Command::new(env!("CARGO_BIN_EXE_podlet"))
        .arg("--root")
        .arg(b.join("data"))
        .args(["pull", &dest])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(pty.slave))
        .status()
        .unwrap();
    assert!(st.success());
    // Everything is buffered in the pty by now (podlet has exited): read until it is empty.
    nix::fcntl::fcntl(
        std::os::fd::AsRawFd::as_raw_fd(&pty.master),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .unwrap();
    let mut master = fs::File::from(pty.master);
    let mut screen = String::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = std::io::Read::read(&mut master, &mut buf) {
        if n == 0 {
            break;
        }
        screen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(
        screen.contains("Copying blob") && screen.contains("done"),
        "{screen}"
    );
    let o = podlet(&b, &["run", "--rm", &dest, "echo", "by-tag"]);
    assert_eq!(out(&o), "by-tag\n", "{}", err(&o));
    let by_digest = format!("{}/test/bb@{digest}", reg.host());
    let o = podlet(&b, &["pull", &by_digest]);
    assert!(o.status.success(), "{}", err(&o));
    let o = podlet(&b, &["run", "--rm", &by_digest, "echo", "by-digest"]);
    assert_eq!(out(&o), "by-digest\n", "{}", err(&o));

    // skopeo pushes (converting to a Docker v2s2 manifest); podlet pulls that and runs it.
    let o = Command::new("skopeo")
        .args([
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--format",
            "v2s2",
        ])
        .arg(format!("docker://{dest}"))
        .arg(format!("docker://{}/test/sk:2", reg.host()))
        .output()
        .expect("skopeo installed");
    assert!(o.status.success(), "skopeo: {}", err(&o));
    let sk = format!("{}/test/sk:2", reg.host());
    let o = podlet(&b, &["pull", &sk]);
    assert!(o.status.success(), "{}", err(&o));
    let o = podlet(&b, &["run", "--rm", &sk, "echo", "via-skopeo"]);
    assert_eq!(out(&o), "via-skopeo\n", "{}", err(&o));
}

#[test]
fn registry_errors_and_corrupt_blobs_store_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start(tmp.path());
    let a = tmp.path().join("a");
    let c = tmp.path().join("c");
    busybox_image(&a);
    let dest = format!("{}/test/bb:1", reg.host());
    assert!(podlet(&a, &["push", "bb:1", &dest]).status.success());

    let o = podlet(&c, &["pull", &format!("{}/test/bb:missing", reg.host())]);
    assert!(
        !o.status.success() && err(&o).contains("MANIFEST_UNKNOWN"),
        "{}",
        err(&o)
    );
    let o = podlet(&c, &["pull", "localhost:1/test/bb:1"]);
    assert!(
        !o.status.success() && err(&o).contains("localhost:1"),
        "{}",
        err(&o)
    );

    // Tamper with every layer-sized blob in the registry's storage: the pull must refuse it.
    let mut tampered = 0;
    let mut stack = vec![reg.data.clone()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "data")
                && p.metadata().unwrap().len() > 4096
            {
                fs::write(&p, b"corrupted layer").unwrap();
                tampered += 1;
            }
        }
    }
    assert!(tampered >= 1);
    let o = podlet(&c, &["pull", &dest]);
    assert!(!o.status.success(), "a corrupt blob was accepted");
    assert!(
        err(&o).contains("digest mismatch") || err(&o).contains("HTTP"),
        "{}",
        err(&o)
    );
    let blobs = c.join("data/blobs/sha256");
    let stored: Vec<_> = fs::read_dir(&blobs).unwrap().flatten().collect();
    assert!(stored.is_empty(), "a failed pull left blobs: {stored:?}");
    let o = podlet(&c, &["images", "--format", "json"]);
    assert_eq!(out(&o).trim(), "[]");
    assert_eq!(
        fs::read_dir(c.join("data/tmp")).unwrap().count(),
        0,
        "temporary files left"
    );
}

#[test]
fn basic_auth_credentials_are_used_and_required() {
    let tmp = tempfile::tempdir().unwrap();
    let htpasswd = tmp.path().join("htpasswd");
    let o = Command::new("htpasswd")
        .args(["-Bbn", "tester", "s3cret"])
        .output()
        .expect("htpasswd installed (apache2-utils)");
    fs::write(&htpasswd, &o.stdout).unwrap();
    let reg = Registry::start_with(
        tmp.path(),
        &format!(
            "auth:\n  htpasswd:\n    realm: podlet-test\n    path: {}\n",
            htpasswd.display()
        ),
    );
    let a = tmp.path().join("a");
    busybox_image(&a);
    let dest = format!("{}/test/private:1", reg.host());
    let o = podlet(&a, &["push", "bb:1", &dest]);
    assert!(
        !o.status.success() && err(&o).contains("authentication required"),
        "{}",
        err(&o)
    );
    let o = podlet(&a, &["push", "--creds", "tester:wrong", "bb:1", &dest]);
    assert!(
        !o.status.success() && err(&o).contains("UNAUTHORIZED"),
        "{}",
        err(&o)
    );
    let o = podlet(&a, &["push", "--creds", "tester:s3cret", "bb:1", &dest]);
    assert!(o.status.success(), "{}", err(&o));
    let b = tmp.path().join("b");
    let o = podlet(&b, &["pull", "--creds", "tester:s3cret", &dest]);
    assert!(o.status.success(), "{}", err(&o));
    // The password never reaches the output.
    assert!(!err(&o).contains("s3cret") && !out(&o).contains("s3cret"));
}
