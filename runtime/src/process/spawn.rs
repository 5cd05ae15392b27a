//! Starting the container's init (or an exec'd process): `clone3` straight into the
//! container's cgroup v2 directory (`CLONE_INTO_CGROUP`), which spares the cgroup migration —
//! an RCU grace period, most of a container start — that writing `cgroup.procs` costs. Falls
//! back to plain `clone` where the kernel lacks clone3 or there is no cgroup v2 directory.

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::sched::CloneFlags;
use nix::unistd::Pid;

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` (linux/sched.h), up to the `cgroup` field (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// How the child was placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Born inside the cgroup v2 directory.
    InCgroup,
    /// Born in the caller's cgroups; the caller must move it.
    NeedsMove,
}

/// Forks a child (fork semantics: a copy of this single-threaded process) with `flags`
/// namespaces, in `cgroup` when given. The child runs `child` and exits with its result.
///
/// # Safety contract
/// The caller must be single-threaded: the child continues on a copy of the caller's stack.
pub fn spawn(
    flags: CloneFlags,
    cgroup: Option<BorrowedFd<'_>>,
    child: impl FnOnce() -> isize,
) -> nix::Result<(Pid, Placement)> {
    if let Some(cg) = cgroup {
        let args = CloneArgs {
            flags: flags.bits() as u64 | CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: cg.as_raw_fd() as u64,
            ..CloneArgs::default()
        };
        // SAFETY: clone3 without CLONE_VM and without a stack behaves like fork: the child
        // gets a copy-on-write copy of this (single-threaded) process and returns 0 here.
        let r = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        match r {
            0 => {
                let code = child();
                // SAFETY: _exit ends the child without running the parent's atexit handlers.
                unsafe { libc::_exit(code as i32) }
            }
            pid if pid > 0 => return Ok((Pid::from_raw(pid as i32), Placement::InCgroup)),
            _ => {
                let e = nix::errno::Errno::last();
                // Old kernel, or a cgroup that refuses direct placement: fall back.
                if !matches!(
                    e,
                    nix::errno::Errno::ENOSYS
                        | nix::errno::Errno::E2BIG
                        | nix::errno::Errno::EINVAL
                        | nix::errno::Errno::EOPNOTSUPP
                ) {
                    return Err(e);
                }
            }
        }
    }
    let mut child = Some(child);
    let mut stack = vec![0u8; 1 << 20];
    let cb = Box::new(move || -> isize { child.take().map(|c| c()).unwrap_or(1) });
    // SAFETY: the child runs on its own stack in a copy of this single-threaded process and
    // only returns an exit code (or execs); SIGCHLD lets the caller wait for it.
    let pid = unsafe { nix::sched::clone(cb, &mut stack, flags, Some(libc::SIGCHLD)) }?;
    Ok((pid, Placement::NeedsMove))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_child_runs_and_its_exit_code_comes_back() {
        let (pid, placement) = spawn(CloneFlags::empty(), None, || 7).unwrap();
        assert_eq!(placement, Placement::NeedsMove);
        let st = nix::sys::wait::waitpid(pid, None).unwrap();
        assert_eq!(st, nix::sys::wait::WaitStatus::Exited(pid, 7));
    }
}
