//! Shared by the CNI tests: network namespaces this test process holds, and running a CNI
//! plugin inside a "node" namespace the way a runtime would.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

/// A network namespace held by `unshare --net sleep`; killed on drop.
pub struct Netns(Child);

impl Netns {
    /// Unshares a fresh network namespace.
    pub fn new() -> Netns {
        let child = Command::new("unshare")
            .args(["--net", "sh", "-c", "exec sleep 1000"])
            .spawn()
            .unwrap();
        for _ in 0..500 {
            let comm =
                std::fs::read_to_string(format!("/proc/{}/comm", child.id())).unwrap_or_default();
            if comm.trim() == "sleep" {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Netns(child)
    }

    /// The namespace as a path.
    pub fn path(&self) -> PathBuf {
        format!("/proc/{}/ns/net", self.0.id()).into()
    }

    /// Runs a command inside this namespace.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--net={}", self.path().display()))
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs a command inside this namespace and returns its stdout.
    #[allow(dead_code)]
    pub fn text(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.run(args).stdout).into_owned()
    }

    /// Ends the namespace now (its links go with it).
    #[allow(dead_code)]
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs plugin `exe` inside `node` for `cmd`, with `config` on stdin and `cni_path` as
/// `CNI_PATH`; returns success and the parsed stdout.
pub fn plugin(
    exe: &Path,
    cni_path: &str,
    node: &Netns,
    cmd: &str,
    id: &str,
    pod: Option<&Path>,
    config: &Value,
) -> (bool, Value) {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", node.path().display()))
        .arg(exe)
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", id)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    if let Some(p) = pod {
        c.env("CNI_NETNS", p);
    }
    let mut child = c.spawn().unwrap();
    // The plugin may refuse before reading its config (a bad environment): ignore EPIPE.
    let _ = child
        .stdin
        .take()
        .unwrap()
        .write_all(config.to_string().as_bytes());
    let out = child.wait_with_output().unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.success(), v)
}

/// Polls `f` every 10 ms for up to 3 s: DEL leaves the retired veth pair to a detached reaper.
#[allow(dead_code)]
pub fn eventually(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..300 {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    false
}
