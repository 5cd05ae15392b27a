//! Probes of what the running kernel lets podlet do (`podlet check-config`).
//!
//! Each namespace is probed for real: a forked child calls `unshare(2)` with the flag and
//! reports the result through its exit status, so the parent is never changed.

use std::fs;
use std::path::Path;

use nix::sched::CloneFlags;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};

use crate::cgroups::CgroupRoot;

/// The outcome of one probe.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    /// What was probed, e.g. `namespace: net`.
    pub name: String,
    /// Whether the feature works.
    pub ok: bool,
    /// Details: the error, or what was found.
    pub detail: String,
}

/// `CLONE_NEWTIME` (Linux 5.6); nix has no constant for it (it overlaps CSIGNAL's range).
pub const CLONE_NEWTIME: CloneFlags = CloneFlags::from_bits_retain(0x80);

/// Every namespace type podlet uses, with its `unshare(2)` flag.
pub const NAMESPACES: &[(&str, CloneFlags)] = &[
    ("mount", CloneFlags::CLONE_NEWNS),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("net", CloneFlags::CLONE_NEWNET),
    ("user", CloneFlags::CLONE_NEWUSER),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("time", CLONE_NEWTIME),
];

/// Tries `unshare(flags)` in a forked child; `Ok(())` if the kernel allowed it.
pub fn probe_unshare(flags: CloneFlags) -> Result<(), String> {
    // SAFETY: the child only calls async-signal-safe functions (unshare, _exit) before exiting.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let code = match nix::sched::unshare(flags) {
                Ok(()) => 0,
                Err(e) => e as i32,
            };
            // SAFETY: _exit is async-signal-safe and ends the forked child immediately.
            unsafe { libc::_exit(code) }
        }
        Ok(ForkResult::Parent { child }) => match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, 0)) => Ok(()),
            Ok(WaitStatus::Exited(_, errno)) => {
                Err(nix::errno::Errno::from_raw(errno).desc().to_string())
            }
            Ok(other) => Err(format!("probe child ended unexpectedly: {other:?}")),
            Err(e) => Err(format!("waitpid: {e}")),
        },
        Err(e) => Err(format!("fork: {e}")),
    }
}

fn filesystem_supported(fs_name: &str) -> bool {
    fs::read_to_string("/proc/filesystems")
        .map(|t| {
            t.lines()
                .any(|l| l.split_whitespace().last() == Some(fs_name))
        })
        .unwrap_or(false)
}

/// Runs every probe and returns the results in a stable order.
pub fn run_checks(cgroup_root: Option<&Path>) -> Vec<Check> {
    let mut out = Vec::new();
    for (name, flag) in NAMESPACES {
        let r = probe_unshare(*flag);
        out.push(Check {
            name: format!("namespace: {name}"),
            ok: r.is_ok(),
            detail: r.err().unwrap_or_else(|| "unshare works".into()),
        });
    }
    for fs_name in [
        "overlay", "tmpfs", "proc", "sysfs", "devpts", "mqueue", "cgroup2",
    ] {
        let ok = filesystem_supported(fs_name);
        out.push(Check {
            name: format!("filesystem: {fs_name}"),
            ok,
            detail: if ok {
                "listed in /proc/filesystems".into()
            } else {
                "missing from /proc/filesystems".into()
            },
        });
    }
    let seccomp = fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Seccomp:")))
        .unwrap_or(false);
    out.push(Check {
        name: "seccomp".into(),
        ok: seccomp,
        detail: if seccomp {
            "kernel reports Seccomp in /proc/self/status".into()
        } else {
            "kernel built without seccomp".into()
        },
    });
    match CgroupRoot::discover(cgroup_root) {
        Ok(root) => {
            for h in &root.hierarchies {
                let name = if h.controllers.is_empty() {
                    "cgroup2".to_string()
                } else {
                    h.controllers.join(",")
                };
                let mut detail = format!("root {}", h.root_dir.display());
                if h.controllers.is_empty() {
                    let ctrls = fs::read_to_string(h.own_dir.join("cgroup.controllers"))
                        .unwrap_or_default();
                    let ctrls = ctrls.trim();
                    detail.push_str(&format!(
                        " (controllers: {})",
                        if ctrls.is_empty() { "none" } else { ctrls }
                    ));
                }
                out.push(Check {
                    name: format!("cgroup: {name}"),
                    ok: true,
                    detail,
                });
            }
        }
        Err(e) => out.push(Check {
            name: "cgroup root".into(),
            ok: false,
            detail: e.to_string(),
        }),
    }
    out
}
