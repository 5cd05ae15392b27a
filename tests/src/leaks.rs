//! The leak guard: what a test run could leave behind, snapshotted before and diffed after.
//!
//! Covered: named network namespaces, network namespaces held by processes, links in the host
//! namespace (veths, bridges), host mounts, cgroup directories below the guard's own cgroup in
//! every hierarchy, and processes of the run (marked by the `PODLET_TEST_RUN` token in their
//! environment, or living in another pid/mount namespace than the guard).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The environment variable that marks a test run's processes.
pub const RUN_TOKEN_VAR: &str = "PODLET_TEST_RUN";

/// A process seen in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// Its pid.
    pub pid: u32,
    /// Start time in clock ticks since boot (tells pid reuse apart).
    pub start_time: u64,
    /// Its command line, for reports.
    pub cmdline: String,
    /// Whether it carries the run's token.
    pub tagged: bool,
    /// Whether it lives in another pid or mount namespace than the guard.
    pub foreign_ns: bool,
}

/// Everything the guard compares.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The run token processes of this run carry.
    pub token: String,
    /// `/run/netns` entries.
    pub named_netns: BTreeSet<String>,
    /// Network namespace inodes held by any process.
    pub netns_inodes: BTreeSet<u64>,
    /// Links in the host network namespace.
    pub links: BTreeSet<String>,
    /// Host mount points (the guard's own `/proc/self/mountinfo`).
    pub mounts: BTreeSet<String>,
    /// Cgroup directories below the guard's own cgroup, in every hierarchy.
    pub cgroups: BTreeSet<String>,
    /// Live processes.
    pub processes: BTreeSet<ProcessInfo>,
}

fn dir_names(path: &Path) -> BTreeSet<String> {
    fs::read_dir(path)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn ns_inode(pid: &str, ns: &str) -> Option<u64> {
    let link = fs::read_link(format!("/proc/{pid}/ns/{ns}")).ok()?;
    let s = link.to_string_lossy();
    s.split_once('[')?.1.trim_end_matches(']').parse().ok()
}

fn walk_cgroups(dir: &Path, out: &mut BTreeSet<String>, depth: usize) {
    if depth > 16 {
        return;
    }
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            let p = e.path();
            out.insert(p.display().to_string());
            walk_cgroups(&p, out, depth + 1);
        }
    }
}

impl Snapshot {
    /// Takes a snapshot of the machine now. `token` marks this run's processes.
    pub fn take(token: &str) -> Self {
        let mut snap = Snapshot {
            token: token.to_string(),
            ..Default::default()
        };
        snap.named_netns = dir_names(Path::new("/run/netns"));
        snap.links = dir_names(Path::new("/sys/class/net"));
        if let Ok(mi) = fs::read_to_string("/proc/self/mountinfo") {
            snap.mounts = mi
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .map(str::to_string)
                .collect();
        }
        if let Ok(root) = podlet_runtime::cgroups::CgroupRoot::discover(None) {
            for h in &root.hierarchies {
                walk_cgroups(&h.own_dir, &mut snap.cgroups, 0);
            }
        }
        let me = std::process::id();
        let ancestors = ancestors(me);
        // pid 1 may hide its namespaces; the guard runs in the host namespaces, so compare with its own.
        let (init_pid_ns, init_mnt_ns) = (ns_inode("self", "pid"), ns_inode("self", "mnt"));
        let marker = format!("{RUN_TOKEN_VAR}={token}");
        for pid in dir_names(Path::new("/proc")) {
            let Ok(n) = pid.parse::<u32>() else { continue };
            if n == me || ancestors.contains(&n) {
                continue;
            }
            if let Some(ino) = ns_inode(&pid, "net") {
                snap.netns_inodes.insert(ino);
            }
            let environ = fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let tagged =
                !token.is_empty() && environ.split(|b| *b == 0).any(|kv| kv == marker.as_bytes());
            let foreign_ns = (ns_inode(&pid, "pid").is_some()
                && ns_inode(&pid, "pid") != init_pid_ns)
                || (ns_inode(&pid, "mnt").is_some() && ns_inode(&pid, "mnt") != init_mnt_ns);
            let cmdline = podlet_runtime::container::process_cmdline(n as i32);
            let Some((_, start_time)) = podlet_runtime::container::process_stat(n as i32) else {
                continue;
            };
            snap.processes.insert(ProcessInfo {
                pid: n,
                start_time,
                cmdline,
                tagged,
                foreign_ns,
            });
        }
        snap
    }

    /// What `after` has that `self` did not: one line per leaked object, empty if clean.
    pub fn leaks_since(&self, after: &Snapshot) -> Vec<String> {
        let mut out = Vec::new();
        for n in after.named_netns.difference(&self.named_netns) {
            out.push(format!("network namespace /run/netns/{n}"));
        }
        for l in after.links.difference(&self.links) {
            out.push(format!("host link {l}"));
        }
        for m in after.mounts.difference(&self.mounts) {
            out.push(format!("mount {m}"));
        }
        for c in after.cgroups.difference(&self.cgroups) {
            out.push(format!("cgroup {c}"));
        }
        let before: BTreeSet<(u32, u64)> = self
            .processes
            .iter()
            .map(|p| (p.pid, p.start_time))
            .collect();
        let mut leaked_ns_holders = BTreeSet::new();
        for p in &after.processes {
            if before.contains(&(p.pid, p.start_time)) {
                continue;
            }
            if p.tagged || p.foreign_ns {
                out.push(format!("process {} ({})", p.pid, p.cmdline));
                leaked_ns_holders.insert(p.pid);
            }
        }
        let new_ns: Vec<_> = after.netns_inodes.difference(&self.netns_inodes).collect();
        if !new_ns.is_empty() && leaked_ns_holders.is_empty() {
            // Held by a process we cannot attribute: report it without guessing who.
            for ino in new_ns {
                out.push(format!(
                    "network namespace net:[{ino}] held by a process started during the run"
                ));
            }
        }
        out
    }
}

/// Pids of `pid`'s ancestors.
fn ancestors(pid: u32) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    let mut cur = pid;
    while cur > 1 {
        let status = fs::read_to_string(format!("/proc/{cur}/status")).unwrap_or_default();
        let ppid = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .and_then(|v| v.trim().parse::<u32>().ok())
            .unwrap_or(0);
        if ppid == 0 || !out.insert(ppid) {
            break;
        }
        cur = ppid;
    }
    out
}

/// Reads a snapshot written by [`write_snapshot`].
pub fn read_snapshot(path: &Path) -> std::io::Result<Snapshot> {
    let text = fs::read_to_string(path)?;
    serde_json::from_str(&text).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Writes a snapshot as JSON.
pub fn write_snapshot(path: &Path, snap: &Snapshot) -> std::io::Result<()> {
    fs::write(
        path,
        serde_json::to_vec_pretty(snap)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?,
    )
}

/// The snapshot file a `make test` run uses by default.
pub fn default_snapshot_path() -> PathBuf {
    crate::bins::target_profile_dir().join("leak-guard-snapshot.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_every_kind_of_leftover() {
        let before = Snapshot {
            token: "t".into(),
            links: ["lo".to_string()].into(),
            ..Default::default()
        };
        let mut after = before.clone();
        after.links.insert("veth0".into());
        after.named_netns.insert("x".into());
        after.mounts.insert("/mnt/x".into());
        after
            .cgroups
            .insert("/sys/fs/cgroup/unified/podlet/c1".into());
        after.processes.insert(ProcessInfo {
            pid: 7,
            start_time: 1,
            cmdline: "sleep".into(),
            tagged: true,
            foreign_ns: false,
        });
        after.processes.insert(ProcessInfo {
            pid: 8,
            start_time: 1,
            cmdline: "cron".into(),
            tagged: false,
            foreign_ns: false,
        });
        let leaks = before.leaks_since(&after);
        assert_eq!(leaks.len(), 5, "{leaks:?}");
        assert!(leaks.iter().any(|l| l.contains("veth0")));
        assert!(leaks.iter().any(|l| l.contains("process 7")));
        assert!(
            !leaks.iter().any(|l| l.contains("cron")),
            "untagged host processes are not ours"
        );
        assert!(before.leaks_since(&before).is_empty());
    }

    #[test]
    fn a_reused_pid_is_a_new_process() {
        let p = |st| ProcessInfo {
            pid: 9,
            start_time: st,
            cmdline: "x".into(),
            tagged: true,
            foreign_ns: false,
        };
        let before = Snapshot {
            processes: [p(1)].into(),
            ..Default::default()
        };
        let after = Snapshot {
            processes: [p(2)].into(),
            ..Default::default()
        };
        assert_eq!(before.leaks_since(&after).len(), 1);
    }
}
