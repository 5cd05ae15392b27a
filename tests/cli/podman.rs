//! Compatibility: podman drives `podlet-runc` as its OCI runtime (`--runtime`), with an image
//! imported from Debian's busybox-static. podman runs rootful with cgroupfs and a cgroup parent
//! below this process's own memory cgroup (it would otherwise create `/libpod_parent` at the
//! hierarchy roots); every cgroup directory and mount it leaves is removed afterwards.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use podlet_testkit::busybox;

fn own_memory_cgroup() -> String {
    fs::read_to_string("/proc/self/cgroup")
        .unwrap()
        .lines()
        .find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrl, path) = (f.next()?, f.next()?, f.next()?);
            (ctrl == "memory").then(|| path.to_string())
        })
        .expect("a v1 memory cgroup")
}

/// The cgroup directories podman may create for `parent` in every hierarchy: the parent
/// and the ancestors up to the hierarchy root.
fn candidate_dirs(parent: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let h = entry.path();
        if !h.join("cgroup.procs").exists() {
            continue;
        }
        let mut p = h.join(parent.trim_start_matches('/'));
        while p != h {
            out.push(p.clone());
            p.pop();
        }
    }
    out
}

/// Removes podman's leftovers: everything below the cgroup parent, then parent and ancestors
/// that did not exist before the test; and any mount under the test's directory.
struct Cleanup {
    dir: PathBuf,
    podman_parent: String,
    existed: BTreeSet<PathBuf>,
    /// Host state directories podman creates on first use.
    _host_dirs: podlet_testkit::host_dirs::HostDirsGuard,
}

fn remove_tree(dir: &Path) {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_tree(&e.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = podman(&self.dir, &["rm", "--all", "--force"]);
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut under: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| Path::new(m).starts_with(&self.dir))
            .collect();
        under.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in under {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
        let mut dirs = candidate_dirs(&self.podman_parent);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.as_os_str().len()));
        for d in dirs {
            if self.existed.contains(&d) {
                continue;
            }
            remove_tree(&d);
        }
    }
}

fn podman(dir: &Path, args: &[&str]) -> Output {
    Command::new("podman")
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(dir.join("run"))
        .arg("--tmpdir")
        .arg(dir.join("tmp"))
        .arg("--network-config-dir")
        .arg(dir.join("net"))
        .arg("--cgroup-manager=cgroupfs")
        .args(args)
        .output()
        .expect("podman installed (scripts/install-deps.sh)")
}

#[test]
fn podman_runs_a_container_through_podlet_runc() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let podman_parent = format!(
        "{}/podlet-test-podman-{}",
        own_memory_cgroup(),
        std::process::id()
    );
    let existed = candidate_dirs(&podman_parent)
        .into_iter()
        .filter(|d| d.exists())
        .collect();
    let _cleanup = Cleanup {
        dir: dir.clone(),
        podman_parent: podman_parent.clone(),
        existed,
        _host_dirs: podlet_testkit::host_dirs::HostDirsGuard::new(),
    };

    let rootfs = busybox::rootfs(&dir.join("rootfs"), &["sh", "echo", "true", "cat"]);
    let tar = busybox::tar(&rootfs, &dir.join("busybox.tar"));
    let out = podman(
        &dir,
        &[
            "import",
            tar.to_str().unwrap(),
            "localhost/podlet-busybox:test",
        ],
    );
    assert!(
        out.status.success(),
        "import: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let runtime = dir.join("podlet-runc");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_podlet"), &runtime).unwrap();
    let cgroup_parent = format!("--cgroup-parent={podman_parent}");
    let run = |extra: &[&str]| -> Output {
        let mut args = vec![
            "--runtime",
            runtime.to_str().unwrap(),
            "run",
            "--rm",
            "--network=none",
            &cgroup_parent,
            "--ulimit",
            "nofile=20000:20000",
            "--ulimit",
            "nproc=32768:32768",
        ];
        args.extend_from_slice(extra);
        podman(&dir, &args)
    };
    let out = run(&["localhost/podlet-busybox:test", "echo", "hi"]);
    assert!(
        out.status.success(),
        "podman run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    // The container's exit code comes back through conmon and podman.
    let out = run(&["localhost/podlet-busybox:test", "sh", "-c", "exit 7"]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
