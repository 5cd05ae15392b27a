//! Container operations: the library API behind `podlet-runc` and the rest of podlet.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::{Hook, LinuxNamespaceType};

use crate::cgroups::{CgroupError, CgroupRoot, ContainerCgroups};
use crate::process::channel::{Channel, Message};
use crate::process::init::{self, InitArgs};
use crate::process::spawn::{spawn, Placement};
use crate::spec::{self, SpecError};
use crate::state::{ContainerState, StateError, StateRoot, Status};

/// Errors from container operations.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// The bundle is invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// State could not be read or written, or the id is bad/unknown/taken.
    #[error(transparent)]
    State(#[from] StateError),
    /// A cgroup step failed.
    #[error("cgroups: {0}")]
    Cgroup(#[from] CgroupError),
    /// A kernel call in the runtime failed.
    #[error("{0}: {1}")]
    Sys(&'static str, String),
    /// The container's init reported a failure while building the container.
    #[error("container init: {0}")]
    Init(String),
    /// The operation does not fit the container's status.
    #[error("container {id} is {status}: {what}")]
    WrongStatus {
        /// The container.
        id: String,
        /// Its status.
        status: Status,
        /// What was refused.
        what: &'static str,
    },
    /// An idmapped mount could not be prepared.
    #[error(transparent)]
    Idmap(#[from] crate::idmap::IdmapError),
    /// A hook failed.
    #[error("hook {path}: {reason}")]
    Hook {
        /// The hook's program.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// One or more hooks of a stage that runs every hook (poststart, poststop) failed.
    #[error("{stage} {}", failures.join("; "))]
    Hooks {
        /// The hook stage, e.g. `poststart`.
        stage: &'static str,
        /// Each failed hook's error.
        failures: Vec<String>,
    },
}

type Result<T> = std::result::Result<T, ContainerError>;

/// Options for [`create`].
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// `--pid-file`.
    pub pid_file: Option<PathBuf>,
    /// `--no-pivot`.
    pub no_pivot: bool,
    /// `--preserve-fds`.
    pub preserve_fds: i32,
    /// `--console-socket`: where the pty master goes when `process.terminal` is set.
    pub console_socket: Option<PathBuf>,
    /// overlayfs mount data for an image snapshot rootfs (mounted by init on `root.path`).
    pub overlay: Option<String>,
}

/// The runtime context: where state lives and podlet's cgroup root.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// The state root.
    pub state: StateRoot,
    /// podlet's cgroup root.
    pub cgroups: CgroupRoot,
}

fn ns_flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => crate::kernel_check::CLONE_NEWTIME,
    }
}

/// The current time as RFC 3339 (UTC, seconds).
pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format_rfc3339(now.as_secs() as i64, None)
}

/// `secs` since the epoch as RFC 3339 (UTC), with `nanos` as nine fraction digits when given.
pub fn format_rfc3339(secs: i64, nanos: Option<u32>) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    let fraction = nanos.map(|n| format!(".{n:09}")).unwrap_or_default();
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}{fraction}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A process's command line with NULs as spaces (empty if it is gone).
pub fn process_cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            String::from_utf8_lossy(&c)
                .replace('\0', " ")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// A process's state letter (`R`, `S`, `Z`…) and start time in clock ticks since boot, from
/// `/proc/<pid>/stat`; `None` if it does not exist.
pub fn process_stat(pid: i32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields are counted after the parenthesised command name, which may contain spaces.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    Some((state, fields.nth(18)?.parse().ok()?))
}

/// A live process's start time, or `None` if it does not exist or is a zombie.
pub fn process_start_time(pid: i32) -> Option<u64> {
    process_stat(pid)
        .filter(|(state, _)| !matches!(state, 'Z' | 'X'))
        .map(|(_, t)| t)
}

fn start_socket(state_dir: &Path) -> PathBuf {
    state_dir.join("start.sock")
}

/// A path to `dir/name` short enough for a unix socket, through /proc/self/fd.
fn short_socket_path(dir_fd: &OwnedFd, name: &str) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}/{name}", dir_fd.as_raw_fd()))
}

pub(crate) fn open_dir(path: &Path) -> Result<OwnedFd> {
    let fd = nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| ContainerError::Sys("open state dir", e.to_string()))?;
    // SAFETY: open returned a new fd that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// Runs hooks with the container state on stdin, each within its timeout.
pub fn run_hooks(hooks: Option<&Vec<Hook>>, state: &ContainerState) -> Result<()> {
    run_hooks_with_state(hooks, &runc_state_json(state), None)
}

/// Runs every hook of `stage` even when one fails (the spec's rule for poststart and poststop),
/// logging each failure as a warning; then reports the failures, as runc does.
pub fn run_all_hooks(
    stage: &'static str,
    hooks: Option<&Vec<Hook>>,
    state: &ContainerState,
) -> Result<()> {
    let mut failures = Vec::new();
    for hook in hooks.into_iter().flatten() {
        if let Err(e) = run_hooks(Some(&vec![hook.clone()]), state) {
            tracing::warn!("{stage} {e}");
            failures.push(e.to_string());
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(ContainerError::Hooks { stage, failures })
    }
}

/// Runs hooks with `state` (the runtime spec's state document) on stdin. A hook without an
/// `env` of its own gets `default_env` (startContainer hooks get the container process's, as
/// runc does), or an empty environment.
pub fn run_hooks_with_state(
    hooks: Option<&Vec<Hook>>,
    state: &serde_json::Value,
    default_env: Option<&[String]>,
) -> Result<()> {
    let state_json = serde_json::to_vec(state).unwrap_or_default();
    for hook in hooks.into_iter().flatten() {
        let mut cmd = std::process::Command::new(hook.path());
        if let Some(args) = hook.args() {
            if let Some((first, rest)) = args.split_first() {
                std::os::unix::process::CommandExt::arg0(&mut cmd, first);
                cmd.args(rest);
            }
        }
        cmd.env_clear();
        let env = hook.env().as_deref().or(default_env).unwrap_or_default();
        for kv in env {
            if let Some((k, v)) = kv.split_once('=') {
                cmd.env(k, v);
            }
        }
        cmd.stdin(std::process::Stdio::piped());
        let hook_err = |reason: String| ContainerError::Hook {
            path: hook.path().clone(),
            reason,
        };
        let mut child = cmd.spawn().map_err(|e| hook_err(e.to_string()))?;
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write;
            let _ = stdin.write_all(&state_json);
        }
        let deadline = hook
            .timeout()
            .filter(|t| *t > 0)
            .map(|t| Instant::now() + Duration::from_secs(t as u64));
        loop {
            match child.try_wait() {
                Ok(Some(st)) if st.success() => break,
                Ok(Some(st)) => return Err(hook_err(format!("exited with {st}"))),
                Ok(None) => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(hook_err(format!(
                            "timed out after {}s",
                            hook.timeout().unwrap_or(0)
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(hook_err(e.to_string())),
            }
        }
    }
    Ok(())
}

/// The state document `runc state` prints (and hooks read on stdin).
pub fn runc_state_json(st: &ContainerState) -> serde_json::Value {
    let mut v = serde_json::json!({
        "ociVersion": st.oci_version,
        "id": st.id,
        "pid": st.pid,
        "status": st.status,
        "bundle": st.bundle,
        "rootfs": st.rootfs,
        "created": st.created,
        "owner": st.owner,
    });
    if !st.annotations.is_empty() {
        v["annotations"] = serde_json::json!(st.annotations);
    }
    v
}

impl Runtime {
    /// Creates a container from the bundle; its init waits for [`Runtime::start`].
    /// On any failure nothing is left: no state dir, cgroup or process.
    pub fn create(&self, id: &str, bundle: &Path, opts: &CreateOptions) -> Result<ContainerState> {
        crate::state::validate_id(id)?;
        let b = spec::load_bundle(bundle)?;
        let terminal = b
            .spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false);
        if terminal && opts.console_socket.is_none() {
            return Err(ContainerError::Init(
                "process.terminal is true but no --console-socket was given to receive the pty"
                    .into(),
            ));
        }
        let state_dir = self.state.claim(id)?;
        let mut cleanup = Cleanup {
            runtime: self,
            id: id.to_string(),
            cgroups: None,
            pid: None,
            armed: true,
        };
        let st = self.create_inner(id, &b, opts, &state_dir, &mut cleanup)?;
        cleanup.armed = false;
        Ok(st)
    }

    fn create_inner(
        &self,
        id: &str,
        b: &spec::Bundle,
        opts: &CreateOptions,
        state_dir: &Path,
        cleanup: &mut Cleanup<'_>,
    ) -> Result<ContainerState> {
        let linux = b.spec.linux().clone().unwrap_or_default();
        let mut flags = CloneFlags::empty();
        let mut join = Vec::new();
        let mut user_ns = false;
        let mut uts_ns = false;
        let mut pid_ns_fd = None;
        let mut cgroup_ns = false;
        let mut time_ns = false;
        for ns in linux.namespaces().iter().flatten() {
            let flag = ns_flag(ns.typ());
            if ns.typ() == LinuxNamespaceType::Uts {
                uts_ns = true;
            }
            match ns.path() {
                Some(p) => {
                    let fd = std::fs::File::open(p).map_err(|e| {
                        ContainerError::Sys("open namespace", format!("{}: {e}", p.display()))
                    })?;
                    let fd: OwnedFd = fd.into();
                    if ns.typ() == LinuxNamespaceType::Pid {
                        // pid namespaces apply to children: join before clone.
                        pid_ns_fd = Some(fd);
                    } else {
                        join.push((flag, fd));
                    }
                }
                None => {
                    if ns.typ() == LinuxNamespaceType::User {
                        user_ns = true;
                    }
                    if ns.typ() == LinuxNamespaceType::Cgroup {
                        // Unshared by init once it sits in its cgroup, so that cgroup is the
                        // namespace's root.
                        cgroup_ns = true;
                    } else if ns.typ() == LinuxNamespaceType::Time {
                        // Unshared by init, which sets the clock offsets before entering it.
                        time_ns = true;
                    } else {
                        flags |= flag;
                    }
                }
            }
        }
        let joins_cgroup_ns = join
            .iter()
            .any(|(f, _): &(CloneFlags, OwnedFd)| *f == CloneFlags::CLONE_NEWCGROUP);
        let cgroups_path = linux
            .cgroups_path()
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| id.to_string());
        let resources = spec::effective_resources(&linux);
        let cg = ContainerCgroups::create(&self.cgroups, &cgroups_path, resources.as_ref())?;
        cleanup.cgroups = Some(cg.clone());

        let dir_fd = open_dir(state_dir)?;
        let listener = UnixListener::bind(short_socket_path(&dir_fd, "start.sock"))
            .map_err(|e| ContainerError::Sys("bind start socket", e.to_string()))?;
        let (mut parent_chan, child_chan) =
            Channel::pair().map_err(|e| ContainerError::Sys("socketpair", e.to_string()))?;
        let mut args = Some(InitArgs {
            spec: b.spec.clone(),
            rootfs: b.rootfs.clone(),
            join,
            user_ns,
            uts_ns,
            cgroup_ns,
            time_ns,
            new_net_ns: flags.contains(CloneFlags::CLONE_NEWNET),
            no_pivot: opts.no_pivot,
            overlay: opts.overlay.clone(),
            idmaps: crate::idmap::prepare(b.spec.mounts().as_deref().unwrap_or_default())?,
            host_cgroup2: if cgroup_ns || joins_cgroup_ns {
                None
            } else {
                self.cgroups.unified().map(|h| h.mount_point.clone())
            },
            preserve_fds: opts.preserve_fds,
            start_listener: Some(listener),
        });
        let mut child_chan = Some(child_chan);
        let cloned = spawn_child(flags, pid_ns_fd.as_ref(), cg.unified_dir(), move || {
            let (Some(a), Some(c)) = (args.take(), child_chan.take()) else {
                return 1;
            };
            init::run(a, c)
        });
        let (pid, placement) = cloned?;
        cleanup.pid = Some(pid.as_raw());
        if user_ns {
            write_id_maps(pid.as_raw(), &linux)?;
        }
        cg.add_process_placed(pid.as_raw(), placement == Placement::InCgroup)?;
        let mut st = ContainerState {
            oci_version: b.spec.version().clone(),
            id: id.to_string(),
            status: Status::Creating,
            pid: pid.as_raw(),
            pid_start_time: process_start_time(pid.as_raw()).unwrap_or(0),
            bundle: b.dir.clone(),
            rootfs: b.rootfs.clone(),
            created: now_rfc3339(),
            owner: "root".into(),
            annotations: b.spec.annotations().clone().unwrap_or_default(),
            cgroup_dirs: cg.dirs.iter().map(|(_, d)| d.clone()).collect(),
        };
        self.state.save(&st)?;
        parent_chan
            .send(&Message::Continue)
            .map_err(|e| ContainerError::Sys("sync with init", e.to_string()))?;
        let hooks = b.spec.hooks().clone().unwrap_or_default();
        let seccomp = linux.seccomp().clone();
        loop {
            let msg = parent_chan
                .recv_with_fd()
                .map_err(|e| ContainerError::Sys("sync with init", e.to_string()))?;
            match msg {
                Some((Message::HooksBeforePivot, _)) => {
                    // prestart hooks (deprecated) have always seen "created"; createRuntime
                    // sees "creating", as the spec's lifecycle says.
                    let mut created = st.clone();
                    created.status = Status::Created;
                    #[allow(deprecated)]
                    let r = run_hooks(hooks.prestart().as_ref(), &created)
                        .and_then(|_| run_hooks(hooks.create_runtime().as_ref(), &st));
                    if let Err(e) = r {
                        let _ = parent_chan.send(&Message::Error(e.to_string()));
                        return Err(e);
                    }
                    let mut created = st.clone();
                    created.status = Status::Created;
                    let doc = runc_state_json(&created).to_string();
                    parent_chan
                        .send(&Message::HooksDone(doc))
                        .map_err(|e| ContainerError::Sys("sync with init", e.to_string()))?;
                }
                Some((Message::Console, Some(master))) => {
                    let path = opts.console_socket.as_ref().ok_or_else(|| {
                        ContainerError::Init("process.terminal needs --console-socket".into())
                    })?;
                    send_console(path, &master)?;
                }
                Some((Message::SeccompFd, Some(fd))) => {
                    let s = seccomp.as_ref().ok_or_else(|| {
                        ContainerError::Init("seccomp fd without linux.seccomp".into())
                    })?;
                    send_seccomp_fd(s, &st, &fd)?;
                }
                Some((Message::Ready, _)) => break,
                Some((Message::Error(e), _)) => return Err(ContainerError::Init(e)),
                Some((m, _)) => {
                    return Err(ContainerError::Init(format!("unexpected message {m:?}")))
                }
                None => return Err(ContainerError::Init("init exited during setup".into())),
            }
        }
        st.status = Status::Created;
        self.state.save(&st)?;
        if let Some(pf) = &opts.pid_file {
            write_pid_file(pf, pid.as_raw())?;
        }
        Ok(st)
    }

    /// The cgroups a container's saved state names.
    fn cgroups_of(&self, st: &ContainerState) -> ContainerCgroups {
        ContainerCgroups::from_dirs(&self.cgroups, &st.cgroup_dirs)
    }

    /// The container's state with its status refreshed from the kernel.
    pub fn state(&self, id: &str) -> Result<ContainerState> {
        let mut st = self.state.load(id)?;
        let alive = st.pid > 0
            && process_start_time(st.pid)
                .is_some_and(|t| st.pid_start_time == 0 || t == st.pid_start_time);
        st.status = if !alive {
            Status::Stopped
        } else if start_socket(&self.state.container_dir(id)?).exists() {
            Status::Created
        } else if self.cgroups_of(&st).is_frozen() {
            Status::Paused
        } else {
            Status::Running
        };
        if st.status == Status::Stopped {
            st.pid = 0;
        }
        Ok(st)
    }

    /// Starts a created container's user process.
    pub fn start(&self, id: &str) -> Result<ContainerState> {
        let st = self.state(id)?;
        if st.status != Status::Created {
            return Err(ContainerError::WrongStatus {
                id: id.into(),
                status: st.status,
                what: "only a created container can be started",
            });
        }
        let dir = self.state.container_dir(id)?;
        let dir_fd = open_dir(&dir)?;
        let mut conn = UnixStream::connect(short_socket_path(&dir_fd, "start.sock"))
            .map_err(|e| ContainerError::Sys("connect start socket", e.to_string()))?;
        let _ = std::fs::remove_file(start_socket(&dir));
        use std::io::Write;
        conn.write_all(b"s")
            .map_err(|e| ContainerError::Sys("signal start", e.to_string()))?;
        // EOF means init reached exec (the socket is close-on-exec); anything written first is
        // why it could not.
        let mut why = String::new();
        let _ = conn.read_to_string(&mut why);
        if !why.is_empty() {
            return Err(ContainerError::Init(why));
        }
        let st = self.state(id)?;
        let spec = spec::load_bundle(&st.bundle).map(|b| b.spec).ok();
        if let Some(hooks) = spec.as_ref().and_then(|s| s.hooks().clone()) {
            // Every poststart hook runs (runtime spec); a failure then fails `start` and stops
            // the container, as runc does.
            if let Err(e) = run_all_hooks("poststart", hooks.poststart().as_ref(), &st) {
                let _ = nix::sys::signal::kill(Pid::from_raw(st.pid), Signal::SIGKILL);
                return Err(e);
            }
        }
        Ok(st)
    }

    /// Sends `signal` to the container's init, or to every process in it with `all`.
    pub fn kill(&self, id: &str, signal: Signal, all: bool) -> Result<()> {
        let st = self.state(id)?;
        if st.status == Status::Stopped {
            return Err(ContainerError::WrongStatus {
                id: id.into(),
                status: st.status,
                what: "cannot signal a stopped container",
            });
        }
        if all {
            for pid in self.cgroups_of(&st).pids() {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), signal);
            }
            return Ok(());
        }
        nix::sys::signal::kill(Pid::from_raw(st.pid), signal)
            .map_err(|e| ContainerError::Sys("kill", e.to_string()))
    }

    /// Deletes a container: refused while it runs unless `force`, which kills it first.
    pub fn delete(&self, id: &str, force: bool) -> Result<()> {
        let st = self.state(id)?;
        let cg = self.cgroups_of(&st);
        match st.status {
            Status::Stopped => {}
            // The spec: deleting a container that is not stopped is an error.
            _ if force => kill_and_wait(&st, &cg),
            status => {
                return Err(ContainerError::WrongStatus {
                    id: id.into(),
                    status,
                    what: "stop it first or use --force",
                })
            }
        }
        cg.remove();
        let hooks = spec::load_bundle(&st.bundle)
            .ok()
            .and_then(|b| b.spec.hooks().clone());
        let mut stopped = st.clone();
        stopped.status = Status::Stopped;
        self.state.remove(id)?;
        // Every poststop hook runs after the container is gone; failures are then reported
        // (runc's `delete` exits non-zero), the container stays deleted.
        if let Some(h) = hooks {
            run_all_hooks("poststop", h.poststop().as_ref(), &stopped)?;
        }
        Ok(())
    }

    /// Freezes a running container.
    pub fn pause(&self, id: &str) -> Result<()> {
        self.set_frozen(
            id,
            Status::Running,
            true,
            "only a running container can be paused",
        )
    }

    /// Thaws a paused container.
    pub fn resume(&self, id: &str) -> Result<()> {
        self.set_frozen(
            id,
            Status::Paused,
            false,
            "only a paused container can be resumed",
        )
    }

    fn set_frozen(
        &self,
        id: &str,
        from: Status,
        frozen: bool,
        refusal: &'static str,
    ) -> Result<()> {
        let st = self.state(id)?;
        if st.status != from {
            return Err(ContainerError::WrongStatus {
                id: id.into(),
                status: st.status,
                what: refusal,
            });
        }
        Ok(self.cgroups_of(&st).set_frozen(frozen)?)
    }

    /// Applies new resource limits to a created, running or paused container (`update`).
    pub fn update(&self, id: &str, res: &oci_spec::runtime::LinuxResources) -> Result<()> {
        let st = self.state(id)?;
        if st.status == Status::Stopped {
            return Err(ContainerError::WrongStatus {
                id: id.into(),
                status: st.status,
                what: "cannot update a stopped container",
            });
        }
        let cgroups_path = spec::load_bundle(&st.bundle)
            .ok()
            .and_then(|b| b.spec.linux().clone())
            .and_then(|l| l.cgroups_path().clone())
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| id.to_string());
        let mut cg = self.cgroups_of(&st);
        let result = cg.apply(&self.cgroups, &cgroups_path, res);
        // Save any cgroup joined on the way, even on failure, so delete removes it.
        let mut saved = self.state.load(id)?;
        saved.cgroup_dirs = cg.dirs.iter().map(|(_, d)| d.clone()).collect();
        self.state.save(&saved)?;
        Ok(result?)
    }

    /// Resource usage in `runc events --stats` shape (the `data` of a stats event).
    pub fn stats(&self, id: &str) -> Result<serde_json::Value> {
        let st = self.state(id)?;
        if st.status == Status::Stopped {
            return Err(ContainerError::WrongStatus {
                id: id.into(),
                status: st.status,
                what: "no stats for a stopped container",
            });
        }
        Ok(crate::cgroups::stats(&self.cgroups_of(&st)))
    }

    /// OOM kills so far in the container's cgroup.
    pub fn oom_kills(&self, id: &str) -> Result<u64> {
        let st = self.state(id)?;
        Ok(crate::cgroups::oom_kills(&self.cgroups_of(&st)))
    }

    /// Pids of every process in the container.
    pub fn pids(&self, id: &str) -> Result<Vec<i32>> {
        let st = self.state(id)?;
        Ok(self.cgroups_of(&st).pids())
    }

    /// Every container's refreshed state.
    pub fn list(&self) -> Result<Vec<ContainerState>> {
        self.state.list()?.iter().map(|id| self.state(id)).collect()
    }

    /// Waits for a container whose init is this process's child; returns a shell-style code.
    pub fn wait_child(&self, pid: i32) -> i32 {
        loop {
            match waitpid(Pid::from_raw(pid), None) {
                Ok(WaitStatus::Exited(_, code)) => return code,
                Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return 255,
            }
        }
    }
}

fn kill_and_wait(st: &ContainerState, cg: &ContainerCgroups) {
    let _ = nix::sys::signal::kill(Pid::from_raw(st.pid), Signal::SIGKILL);
    for pid in cg.pids() {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    // Reap it if it is our child; otherwise wait for it to vanish.
    let _ = waitpid(
        Pid::from_raw(st.pid),
        Some(nix::sys::wait::WaitPidFlag::WNOHANG),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline
        && (process_start_time(st.pid).is_some() || !cg.pids().is_empty())
    {
        let _ = waitpid(
            Pid::from_raw(st.pid),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Forks a container process: in the pid namespace `pid_ns` when given (joined for the fork
/// only — this process's own pid namespace for children is restored, so a long-lived caller
/// such as the agent keeps it), born in the cgroup v2 directory `cgroup_dir` when given.
pub(crate) fn spawn_child(
    flags: CloneFlags,
    pid_ns: Option<&OwnedFd>,
    cgroup_dir: Option<&Path>,
    child: impl FnOnce() -> isize,
) -> Result<(Pid, Placement)> {
    let own_pid_ns = match pid_ns {
        Some(fd) => {
            let own = std::fs::File::open("/proc/self/ns/pid_for_children")
                .map_err(|e| ContainerError::Sys("open own pid namespace", e.to_string()))?;
            nix::sched::setns(fd, CloneFlags::CLONE_NEWPID)
                .map_err(|e| ContainerError::Sys("join pid namespace", e.to_string()))?;
            Some(own)
        }
        None => None,
    };
    let cgroup = cgroup_dir.map(open_dir).transpose();
    let cloned = match &cgroup {
        Ok(fd) => spawn(flags, fd.as_ref().map(|f| f.as_fd()), child)
            .map_err(|e| ContainerError::Sys("clone", e.to_string())),
        Err(e) => Err(ContainerError::Sys("open cgroup", e.to_string())),
    };
    if let Some(own) = &own_pid_ns {
        nix::sched::setns(own, CloneFlags::CLONE_NEWPID)
            .map_err(|e| ContainerError::Sys("return to own pid namespace", e.to_string()))?;
    }
    cloned
}

/// Writes `pid` to `path` atomically (runc's `--pid-file`).
pub(crate) fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, pid.to_string())
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| ContainerError::Sys("write pid file", format!("{}: {e}", path.display())))
}

/// Hands the pty master to the `--console-socket` listener (runc's protocol: one message,
/// the fd attached).
pub(crate) fn send_console(path: &Path, master: &OwnedFd) -> Result<()> {
    let sock = UnixStream::connect(path).map_err(|e| {
        ContainerError::Sys("connect console socket", format!("{}: {e}", path.display()))
    })?;
    crate::process::fdpass::send_with_fds(&sock, b"/dev/ptmx", &[master.as_raw_fd()])
        .map_err(|e| ContainerError::Sys("send console", e.to_string()))
}

/// Hands the seccomp notify fd to `listenerPath` with the spec's container-process state.
pub(crate) fn send_seccomp_fd(
    seccomp: &oci_spec::runtime::LinuxSeccomp,
    st: &ContainerState,
    fd: &OwnedFd,
) -> Result<()> {
    let Some(path) = seccomp.listener_path() else {
        return Err(ContainerError::Init(
            "seccomp notify without listenerPath".into(),
        ));
    };
    let doc = serde_json::json!({
        "ociVersion": st.oci_version,
        "fds": ["seccompFd"],
        "pid": st.pid,
        "metadata": seccomp.listener_metadata().clone().unwrap_or_default(),
        "state": runc_state_json(st),
    });
    let sock = UnixStream::connect(path).map_err(|e| {
        ContainerError::Sys(
            "connect seccomp listener",
            format!("{}: {e}", path.display()),
        )
    })?;
    crate::process::fdpass::send_with_fds(&sock, doc.to_string().as_bytes(), &[fd.as_raw_fd()])
        .map_err(|e| ContainerError::Sys("send seccomp fd", e.to_string()))
}

fn write_id_maps(pid: i32, linux: &oci_spec::runtime::Linux) -> Result<()> {
    let fmt = |maps: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| -> String {
        maps.iter()
            .flatten()
            .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
            .collect()
    };
    let uid = fmt(linux.uid_mappings());
    let gid = fmt(linux.gid_mappings());
    if !uid.is_empty() {
        std::fs::write(format!("/proc/{pid}/uid_map"), uid)
            .map_err(|e| ContainerError::Sys("write uid_map", e.to_string()))?;
    }
    if !gid.is_empty() {
        std::fs::write(format!("/proc/{pid}/gid_map"), gid)
            .map_err(|e| ContainerError::Sys("write gid_map", e.to_string()))?;
    }
    Ok(())
}

/// Undoes a half-made `create`: kills the init, removes cgroups and the state dir.
struct Cleanup<'a> {
    runtime: &'a Runtime,
    id: String,
    cgroups: Option<ContainerCgroups>,
    pid: Option<i32>,
    armed: bool,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(pid) = self.pid {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(pid), None);
        }
        if let Some(cg) = &self.cgroups {
            cg.remove();
        }
        let _ = self.runtime.state.remove(&self.id);
    }
}
