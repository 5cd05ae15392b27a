//! Shared by the `podlet-runc` CLI tests: a busybox bundle with a private state root and
//! cgroup root, and helpers that run `podlet-runc` without pipes a container could hold open.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{json, Value};

static N: AtomicU32 = AtomicU32::new(0);

/// A bundle, a private state root and cgroup root; deletes its containers on drop.
pub struct Env {
    pub dir: tempfile::TempDir,
    cgroup_root: String,
    ids: Vec<String>,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        podlet_testkit::busybox::rootfs(
            &dir.path().join("rootfs"),
            &[
                "sh", "echo", "cat", "ls", "sleep", "hostname", "id", "grep", "readlink", "touch",
                "head", "mkdir", "env", "pwd", "true", "wc", "tty", "false", "mknod", "stat", "tr",
                "seq",
            ],
        );
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_podlet"), dir.path().join("podlet-runc"))
            .unwrap();
        let n = N.fetch_add(1, Ordering::SeqCst);
        let env = Env {
            dir,
            cgroup_root: format!("podlet-runc-test-{}-{n}", std::process::id()),
            ids: Vec::new(),
        };
        let out = env.runc(&["spec", "--bundle", env.bundle().to_str().unwrap()]);
        assert!(out.status.success(), "{out:?}");
        env
    }

    pub fn bundle(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Maps the container's root to uid/gid 100000 in a new user namespace, with the rootfs
    /// owned by it (as any user-namespaced container needs).
    pub fn user_namespaced(&self) {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(self.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        fn chown_tree(p: &Path) {
            std::os::unix::fs::lchown(p, Some(100000), Some(100000)).unwrap();
            if p.is_dir() && !p.is_symlink() {
                for e in fs::read_dir(p).unwrap().flatten() {
                    chown_tree(&e.path());
                }
            }
        }
        chown_tree(&self.bundle().join("rootfs"));
        self.set_config(|c| {
            c["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .push(json!({"type": "user"}));
            c["linux"]["uidMappings"] =
                json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
            c["linux"]["gidMappings"] =
                json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        });
    }

    pub fn cgroup_root(&self) -> &str {
        &self.cgroup_root
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn config(&self) -> Value {
        serde_json::from_slice(&fs::read(self.bundle().join("config.json")).unwrap()).unwrap()
    }

    pub fn set_config(&self, f: impl FnOnce(&mut Value)) {
        let mut c = self.config();
        f(&mut c);
        fs::write(
            self.bundle().join("config.json"),
            serde_json::to_vec(&c).unwrap(),
        )
        .unwrap();
    }

    pub fn set_args(&self, args: &[&str]) {
        self.set_config(|c| {
            c["process"]["args"] = json!(args);
            c["process"]["terminal"] = json!(false);
        });
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.dir.path().join("podlet-runc"));
        cmd.arg("--root")
            .arg(self.root())
            .arg("--cgroup-root")
            .arg(&self.cgroup_root)
            .args(args);
        cmd
    }

    /// Runs podlet-runc with stdout/stderr in files: a created container inherits them, so
    /// pipes would stay open until it exits. Gives up (and fails) after 60 s.
    pub fn runc(&self, args: &[&str]) -> Output {
        run_with_files(self.command(args), self.dir.path())
    }

    pub fn id(&mut self, name: &str) -> String {
        let id = format!("{name}-{}", std::process::id());
        self.ids.push(id.clone());
        id
    }

    pub fn run(&mut self, name: &str, args: &[&str]) -> Output {
        self.set_args(args);
        let id = self.id(name);
        self.runc(&["run", "--bundle", self.bundle().to_str().unwrap(), &id])
    }

    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let root =
            podlet_runtime::cgroups::CgroupRoot::discover(Some(Path::new(&self.cgroup_root)))
                .unwrap();
        root.hierarchies
            .iter()
            .map(|h| h.root_dir.clone())
            .filter(|d| d.exists())
            .collect()
    }

    /// Fails if a state dir or a cgroup of this environment remains.
    pub fn assert_nothing_left(&self, context: &str) {
        assert!(
            self.state_entries().is_empty(),
            "{context}: state left {:?}",
            self.state_entries()
        );
        assert!(
            self.cgroup_dirs().is_empty(),
            "{context}: cgroups left {:?}",
            self.cgroup_dirs()
        );
    }

    pub fn state_entries(&self) -> Vec<String> {
        fs::read_dir(self.root())
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    // The runtime's own empty overlay layer (sealed_exe), not container state.
                    .filter(|n| n != ".exe-layer")
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for id in self.ids.clone() {
            let _ = self.runc(&["delete", "--force", &id]);
        }
    }
}

pub fn run_with_files(mut cmd: Command, dir: &Path) -> Output {
    let n = N.fetch_add(1, Ordering::SeqCst);
    let (out_path, err_path) = (dir.join(format!("out-{n}")), dir.join(format!("err-{n}")));
    cmd.stdout(fs::File::create(&out_path).unwrap())
        .stderr(fs::File::create(&err_path).unwrap());
    let mut child = cmd.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("podlet-runc {cmd:?} timed out");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let out = Output {
        status,
        stdout: fs::read(&out_path).unwrap(),
        stderr: fs::read(&err_path).unwrap(),
    };
    let _ = fs::remove_file(out_path);
    let _ = fs::remove_file(err_path);
    out
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
