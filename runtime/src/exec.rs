//! `exec`: a new process inside a created or running container.

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespaceType, Process};

use crate::cgroups::ContainerCgroups;
use crate::container::{send_console, send_seccomp_fd, spawn_child, ContainerError, Runtime};
use crate::process::channel::{Channel, Message};
use crate::process::exec::{self, ExecArgs};
use crate::process::spawn::Placement;
use crate::spec;
use crate::state::Status;

/// Options for [`Runtime::exec`].
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// `--pid-file`.
    pub pid_file: Option<PathBuf>,
    /// `--console-socket`.
    pub console_socket: Option<PathBuf>,
    /// `--preserve-fds`.
    pub preserve_fds: i32,
    /// Give the process `/dev/null` as stdin, stdout and stderr instead of the caller's
    /// (for probes and hooks run by a long-lived caller such as the node agent).
    pub null_stdio: bool,
    /// `--cgroup`: existing sub-cgroups of the container's cgroup to start the process in
    /// (see [`ContainerCgroups::sub_cgroups`]).
    pub sub_cgroups: Vec<String>,
    /// `--ignore-paused`: exec into a paused container too (the process stays frozen until
    /// the container is resumed).
    pub ignore_paused: bool,
}

/// The `/proc/<pid>/ns` entry name and clone flag of a namespace type.
fn ns_entry(t: LinuxNamespaceType) -> (&'static str, CloneFlags) {
    match t {
        LinuxNamespaceType::Mount => ("mnt", CloneFlags::CLONE_NEWNS),
        LinuxNamespaceType::Cgroup => ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        LinuxNamespaceType::Uts => ("uts", CloneFlags::CLONE_NEWUTS),
        LinuxNamespaceType::Ipc => ("ipc", CloneFlags::CLONE_NEWIPC),
        LinuxNamespaceType::User => ("user", CloneFlags::CLONE_NEWUSER),
        LinuxNamespaceType::Pid => ("pid", CloneFlags::CLONE_NEWPID),
        LinuxNamespaceType::Network => ("net", CloneFlags::CLONE_NEWNET),
        LinuxNamespaceType::Time => ("time", crate::kernel_check::CLONE_NEWTIME),
    }
}

fn sys(what: &'static str) -> impl Fn(std::io::Error) -> ContainerError {
    move |e| ContainerError::Sys(what, e.to_string())
}

impl Runtime {
    /// The container's configured process, to base an `exec` on (runc's behaviour).
    pub fn base_process(&self, id: &str) -> Result<Process, ContainerError> {
        let st = self.state.load(id)?;
        let b = spec::load_bundle(&st.bundle)?;
        Ok(b.spec.process().clone().unwrap_or_default())
    }

    /// Starts `process` in container `id`; returns its pid once it has exec'd.
    pub fn exec(
        &self,
        id: &str,
        process: Process,
        opts: &ExecOptions,
    ) -> Result<i32, ContainerError> {
        let st = self.state(id)?;
        let refused = match st.status {
            Status::Created | Status::Running => None,
            Status::Paused if opts.ignore_paused => None,
            Status::Paused => {
                Some("cannot exec in a paused container (use --ignore-paused to override)")
            }
            _ => Some("exec needs a created or running container"),
        };
        if let Some(what) = refused {
            return Err(ContainerError::WrongStatus {
                id: id.into(),
                status: st.status,
                what,
            });
        }
        if process.args().as_ref().is_none_or(|a| a.is_empty()) {
            return Err(ContainerError::Init("exec: no command given".into()));
        }
        if process.terminal().unwrap_or(false) && opts.console_socket.is_none() {
            return Err(ContainerError::Init(
                "exec with a terminal needs --console-socket to receive the pty".into(),
            ));
        }
        let b = spec::load_bundle(&st.bundle)?;
        let linux = b.spec.linux().clone().unwrap_or_default();
        spec::check_process(Some(&process), Some(&linux))?;
        let mut join = Vec::new();
        let mut pid_ns = None;
        for ns in linux.namespaces().iter().flatten() {
            let (entry, flag) = ns_entry(ns.typ());
            let path = format!("/proc/{}/ns/{entry}", st.pid);
            let fd: OwnedFd = std::fs::File::open(&path)
                .map_err(|e| ContainerError::Sys("open namespace", format!("{path}: {e}")))?
                .into();
            if ns.typ() == LinuxNamespaceType::Pid {
                pid_ns = Some(fd);
            } else {
                join.push((flag, fd));
            }
        }
        let cg = ContainerCgroups::from_dirs(&self.cgroups, &st.cgroup_dirs)
            .sub_cgroups(&opts.sub_cgroups)?;
        let (mut parent_chan, child_chan) = Channel::pair().map_err(sys("socketpair"))?;
        let mut args = Some(ExecArgs {
            process,
            linux: Some(linux.clone()),
            join,
            preserve_fds: opts.preserve_fds,
        });
        let mut child_chan = Some(child_chan);
        let null = if opts.null_stdio {
            Some(
                std::fs::File::open("/dev/null")
                    .map_err(|e| ContainerError::Sys("open /dev/null", e.to_string()))?,
            )
        } else {
            None
        };
        let null_fd = null.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
        let cloned = spawn_child(
            CloneFlags::empty(),
            pid_ns.as_ref(),
            cg.unified_dir(),
            move || {
                if let Some(fd) = null_fd {
                    for target in 0..3 {
                        // SAFETY: dup2 on an fd the parent opened before clone and the
                        // standard descriptors of this new child; async-signal-safe.
                        if unsafe { libc::dup2(fd, target) } < 0 {
                            return 1;
                        }
                    }
                }
                let (Some(a), Some(c)) = (args.take(), child_chan.take()) else {
                    return 1;
                };
                exec::run(a, c)
            },
        );
        drop(null);
        let (pid, placement) = cloned?;
        let kill_child = || {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
        };
        let result = (|| {
            cg.add_process_placed(pid.as_raw(), placement == Placement::InCgroup)?;
            parent_chan
                .send(&Message::Continue)
                .map_err(sys("sync with exec child"))?;
            loop {
                match parent_chan
                    .recv_with_fd()
                    .map_err(sys("sync with exec child"))?
                {
                    Some((Message::Console, Some(master))) => {
                        if let Some(path) = &opts.console_socket {
                            send_console(path, &master)?;
                        }
                    }
                    Some((Message::SeccompFd, Some(fd))) => {
                        if let Some(s) = linux.seccomp() {
                            let mut me = st.clone();
                            me.pid = pid.as_raw();
                            send_seccomp_fd(s, &me, &fd)?;
                        }
                    }
                    Some((Message::Ready, _)) => break,
                    Some((Message::Error(e), _)) => return Err(ContainerError::Init(e)),
                    Some((m, _)) => {
                        return Err(ContainerError::Init(format!("unexpected message {m:?}")))
                    }
                    None => return Err(ContainerError::Init("exec child exited".into())),
                }
            }
            // EOF: the channel closed on a successful exec; a message means execve failed.
            match parent_chan.recv().map_err(sys("sync with exec child"))? {
                None => Ok(()),
                Some(Message::Error(e)) => Err(ContainerError::Init(e)),
                Some(m) => Err(ContainerError::Init(format!("unexpected message {m:?}"))),
            }
        })();
        if let Err(e) = result {
            kill_child();
            return Err(e);
        }
        if let Some(pf) = &opts.pid_file {
            crate::container::write_pid_file(pf, pid.as_raw())?;
        }
        Ok(pid.as_raw())
    }
}
