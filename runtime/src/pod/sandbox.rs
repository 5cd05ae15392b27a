//! The sandbox process of a pod: it holds the pod's network, IPC and UTS namespaces for as long
//! as the pod lives, and does nothing else (Kubernetes' "pause" container).
//!
//! It is started as `EXE ARGS…` (the caller's program, e.g. `podlet pause`) with the
//! namespaces unshared in the child before `exec`, in its own session so that it outlives the
//! command that created it. Identity is the pid plus its start time, so a recycled pid is never
//! mistaken for the sandbox.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::PodError;

/// A running (or once running) sandbox process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sandbox {
    /// Its pid.
    pub pid: i32,
    /// Its start time (clock ticks since boot, `/proc/PID/stat` field 22).
    pub start_time: u64,
}

/// The start time of `pid`, if it is alive (a zombie is not).
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let mut fields = rest.split_whitespace();
    if fields.next()? == "Z" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

impl Sandbox {
    /// Starts `exe args…` in new IPC and UTS namespaces (and a new network namespace when
    /// `own_network`) with `hostname`, detached in its own session, stdio on /dev/null.
    pub fn spawn(
        exe: &Path,
        args: &[&str],
        hostname: &str,
        own_network: bool,
    ) -> Result<Sandbox, PodError> {
        let hostname = hostname.to_string();
        let mut flags = CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS;
        if own_network {
            flags |= CloneFlags::CLONE_NEWNET;
        }
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: between fork and exec the child only makes raw system calls (setsid,
        // unshare, sethostname) on data prepared before the fork; nothing allocates or locks.
        unsafe {
            cmd.pre_exec(move || {
                nix::unistd::setsid()?;
                nix::sched::unshare(flags)?;
                nix::unistd::sethostname(&hostname)?;
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| PodError::Sandbox {
            what: format!("start {}", exe.display()),
            source: e,
        })?;
        let pid = child.id() as i32;
        // Not waited for: the sandbox lives on in its own session (init reaps it).
        drop(child);
        let start_time = process_start_time(pid).ok_or_else(|| PodError::Sandbox {
            what: "sandbox exited at once".into(),
            source: std::io::Error::from_raw_os_error(libc::ESRCH),
        })?;
        Ok(Sandbox { pid, start_time })
    }

    /// Whether the sandbox process still runs (same pid, same start time).
    pub fn is_alive(&self) -> bool {
        self.pid > 0 && process_start_time(self.pid) == Some(self.start_time)
    }

    /// The path of one of its namespaces (`net`, `ipc`, `uts`), while it is alive.
    pub fn ns_path(&self, ns: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/{ns}", self.pid))
    }

    /// Stops the sandbox (SIGKILL: it holds no state) and waits until it is gone.
    pub fn stop(&self) {
        if !self.is_alive() {
            return;
        }
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        for _ in 0..400 {
            // Our own child (the same process started it): reap it; otherwise init does.
            let _ = nix::sys::wait::waitpid(
                Pid::from_raw(self.pid),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            );
            if !self.is_alive() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

/// The body of the sandbox program: wait for SIGTERM/SIGINT/SIGHUP, reap anything, exit 0.
/// Call it from a binary's hidden `pause` subcommand; it never returns.
pub fn pause_main() -> ! {
    use nix::sys::signal::{SigSet, Signal as S};
    let mut set = SigSet::empty();
    for s in [S::SIGTERM, S::SIGINT, S::SIGHUP, S::SIGCHLD] {
        set.add(s);
    }
    let _ = set.thread_block();
    loop {
        match set.wait() {
            Ok(S::SIGCHLD) => loop {
                match nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                    Ok(nix::sys::wait::WaitStatus::StillAlive) | Err(_) => break,
                    Ok(_) => {}
                }
            },
            Ok(_) => std::process::exit(0),
            Err(_) => {}
        }
    }
}
