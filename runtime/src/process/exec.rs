//! The child of `exec`: joins a running container's namespaces and becomes a new process in it.

use std::os::fd::OwnedFd;
use std::path::Path;

use nix::sched::CloneFlags;
use oci_spec::runtime::{Linux, Process};

use super::channel::{Channel, Message};
use super::console;
use super::init::{
    close_fds_except, exec_process, finalize_process, join_namespaces, release_owned_fds,
};
use super::sched;

/// Everything the exec child needs, prepared by the parent before clone.
#[derive(Debug)]
pub struct ExecArgs {
    /// The process to run.
    pub process: Process,
    /// The container's `linux` section: its seccomp profile, memory policy and personality
    /// apply to exec'd processes too.
    pub linux: Option<Linux>,
    /// The container's namespaces, opened from its init's `/proc/<pid>/ns`.
    pub join: Vec<(CloneFlags, OwnedFd)>,
    /// Extra fds (3..3+n) passed through.
    pub preserve_fds: i32,
}

/// The exec child's body. Never returns on success: it execs.
pub fn run(mut args: ExecArgs, mut chan: Channel) -> isize {
    match chan.recv() {
        Ok(Some(Message::Continue)) => {}
        _ => return 1,
    }
    if let Err(e) = setup(&args, &mut chan) {
        let _ = chan.send(&Message::Error(e));
        return 1;
    }
    // No runtime fd may reach execve (CVE-2024-21626 class; see init::run): only the channel
    // stays, and it closes on exec.
    release_owned_fds(args.join.drain(..).map(|(_, fd)| fd));
    let keep = [std::os::fd::AsRawFd::as_raw_fd(&chan)];
    if let Err(e) = close_fds_except(3 + args.preserve_fds.max(0), &keep) {
        let _ = chan.send(&Message::Error(e));
        return 1;
    }
    if chan.send(&Message::Ready).is_err() {
        return 1;
    }
    // The channel closes on exec: the parent reads EOF as success, a message as failure.
    let err = exec_process(Some(&args.process));
    let _ = chan.send(&Message::Error(err));
    127
}

fn setup(args: &ExecArgs, chan: &mut Channel) -> Result<(), String> {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let (initial, last) = sched::exec_affinity(&args.process);
    if let Some(cpus) = initial {
        sched::set_affinity("process.execCPUAffinity.initial", &cpus)?;
    }
    join_namespaces(&args.join)?;
    if args.process.terminal().unwrap_or(false) {
        nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
        // After joining the mount namespace our root is the container's root.
        let (master, slave) = console::open_pty(&console::ptmx_in(Path::new("/")))
            .map_err(|e| format!("allocate terminal: {e}"))?;
        console::become_terminal(&slave).map_err(|e| format!("terminal: {e}"))?;
        chan.send_with_fd(&Message::Console, Some(&master))
            .map_err(|e| format!("send terminal: {e}"))?;
    }
    if let Some(adj) = args.process.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| format!("oom_score_adj: {e}"))?;
    }
    finalize_process(&args.process, args.linux.as_ref(), chan)?;
    // The final affinity is set last, once the process sits in the container's cgroup.
    if let Some(cpus) = last {
        sched::set_affinity("process.execCPUAffinity.final", &cpus)?;
    }
    Ok(())
}
