//! The container's init: runs in the cloned child, builds the container, then execs.

use std::collections::HashSet;
use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use oci_spec::runtime::{Hook, Linux, LinuxCapabilities, Process, Spec};

use super::channel::{Channel, Message};
use super::console;
use super::sched;
use crate::rootfs::{self, RootfsOptions};
use crate::seccomp;
use crate::syscall::LinuxSyscall;

/// Everything init needs, prepared by the parent before clone.
#[derive(Debug)]
pub struct InitArgs {
    /// The container's configuration.
    pub spec: Spec,
    /// The root filesystem (host path).
    pub rootfs: PathBuf,
    /// Namespaces to join: flag and an open fd of the namespace file.
    pub join: Vec<(CloneFlags, OwnedFd)>,
    /// Whether a new user namespace was created (maps come from the parent).
    pub user_ns: bool,
    /// Whether a new uts namespace was created or joined.
    pub uts_ns: bool,
    /// Whether to unshare a cgroup namespace (after the parent placed us in our cgroup).
    pub cgroup_ns: bool,
    /// Whether to make a time namespace (with `linux.timeOffsets`) and enter it.
    pub time_ns: bool,
    /// Whether the container has a new network namespace (its loopback is brought up, as
    /// runc does).
    pub new_net_ns: bool,
    /// `--no-pivot`.
    pub no_pivot: bool,
    /// The runtime's cgroup2 mount point, set when the container stays in the runtime's
    /// cgroup namespace (see [`RootfsOptions::host_cgroup2`]).
    pub host_cgroup2: Option<PathBuf>,
    /// User namespaces for idmapped mounts: mount index → (fd, recursive).
    pub idmaps: std::collections::HashMap<usize, (OwnedFd, bool)>,
    /// overlayfs data when the rootfs is an image snapshot.
    pub overlay: Option<String>,
    /// Extra fds (3..3+n) that stay open in the container (`--preserve-fds`).
    pub preserve_fds: i32,
    /// The listening start socket, bound in the state dir by the parent.
    pub start_listener: Option<UnixListener>,
}

/// Init's body. Never returns: it execs the user process or exits.
pub fn run(mut args: InitArgs, mut chan: Channel) -> isize {
    match chan.recv() {
        Ok(Some(Message::Continue)) => {}
        _ => return 1,
    }
    let listener = args.start_listener.take();
    let hook_state = match setup(&args, &mut chan) {
        Ok(state) => state,
        Err(e) => {
            let _ = chan.send(&Message::Error(e));
            return 1;
        }
    };
    // From here on no runtime fd may stay open (CVE-2024-21626 class): execve resolves
    // process.args[0] before close-on-exec applies, so /proc/self/fd/N/.. of a directory fd
    // would reach the host. Only the channel and the start socket are kept (sockets: no path
    // walks through them); they close on exec.
    release_owned_fds(args.join.drain(..).map(|(_, fd)| fd));
    release_owned_fds(args.idmaps.drain().map(|(_, (fd, _))| fd));
    let mut keep = vec![chan.as_raw_fd()];
    keep.extend(listener.as_ref().map(|l| l.as_raw_fd()));
    let checked = close_fds_except(3 + args.preserve_fds.max(0), &keep).and_then(|_| {
        // Like runc, a program that cannot be found fails `create`, not `start`; checked
        // once nothing but the container's own files can be reached.
        args.spec.process().as_ref().map_or(Ok(()), check_program)
    });
    if let Err(e) = checked {
        let _ = chan.send(&Message::Error(e));
        return 1;
    }
    if chan.send(&Message::Ready).is_err() {
        return 1;
    }
    drop(chan);
    let mut conn = None;
    if let Some(listener) = listener {
        // Wait for `start`: one connection, one byte.
        match listener.accept() {
            Ok((mut c, _)) => {
                let mut b = [0u8; 1];
                let _ = c.read(&mut b);
                // The connection closes on exec (CLOEXEC); `start` reads that as "started".
                conn = Some(c);
            }
            Err(_) => return 1,
        }
        drop(listener);
    }
    if args.spec.process().is_none() {
        if let Some(c) = conn.as_mut() {
            use std::io::Write;
            let _ = c.write_all(b"config.json has no process to start");
        }
        return 1;
    }
    let hooks = args.spec.hooks().clone().unwrap_or_default();
    let process_env = args
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.env().clone())
        .unwrap_or_default();
    if let Err(e) = run_hooks_here(
        hooks.start_container().as_ref(),
        &hook_state,
        Some(&process_env),
    ) {
        if let Some(c) = conn.as_mut() {
            use std::io::Write;
            let _ = c.write_all(format!("startContainer hook: {e}").as_bytes());
        }
        return 1;
    }
    let err = exec_process(args.spec.process().as_ref());
    if let Some(c) = conn.as_mut() {
        use std::io::Write;
        let _ = c.write_all(err.as_bytes());
    }
    eprintln!("podlet: exec failed: {err}");
    127
}

/// Runs container-namespace hooks from init with the state document on stdin; hooks without
/// an `env` get `default_env`.
fn run_hooks_here(
    hooks: Option<&Vec<Hook>>,
    state_json: &str,
    default_env: Option<&[String]>,
) -> Result<(), String> {
    let Some(hooks) = hooks else { return Ok(()) };
    let state: serde_json::Value = serde_json::from_str(state_json).map_err(|e| e.to_string())?;
    crate::container::run_hooks_with_state(Some(hooks), &state, default_env)
        .map_err(|e| e.to_string())
}

fn step<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

/// Joins `join` (the user namespace first, so the others are joined with its privileges).
pub fn join_namespaces(join: &[(CloneFlags, OwnedFd)]) -> Result<(), String> {
    let mut join: Vec<&(CloneFlags, OwnedFd)> = join.iter().collect();
    join.sort_by_key(|(f, _)| {
        if *f == CloneFlags::CLONE_NEWUSER {
            0
        } else {
            1
        }
    });
    for (flag, fd) in join {
        step(
            &format!("join namespace {flag:?}"),
            nix::sched::setns(fd, *flag),
        )?;
    }
    Ok(())
}

/// Sets `lo` up in the current network namespace.
pub(crate) fn loopback_up() -> std::io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: socket(2) with constant arguments; the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: socket returned a new fd that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo".iter().enumerate() {
        ifr.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the live ifreq.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Opens `/proc/self/timens_offsets` for [`enter_time_namespace`]. Done first thing, while the
/// process is still dumpable: once it is not, its `/proc/self` files belong to the host's root,
/// which a new user namespace cannot open (EACCES). The file is resolved at write time, so it
/// then names the time namespace unshared later.
fn open_time_offsets(spec: &Spec) -> Result<Option<std::fs::File>, String> {
    let has_offsets = spec
        .linux()
        .as_ref()
        .and_then(|l| l.time_offsets().as_ref())
        .is_some_and(|o| !o.is_empty());
    if !has_offsets {
        return Ok(None);
    }
    step(
        "linux.timeOffsets: open /proc/self/timens_offsets",
        std::fs::OpenOptions::new()
            .write(true)
            .open("/proc/self/timens_offsets"),
    )
    .map(Some)
}

/// Makes a time namespace with the spec's clock offsets and moves into it: offsets can only be
/// written before any process is inside, so unshare (which affects children), write, then
/// setns to it.
fn enter_time_namespace(spec: &Spec, offsets_file: Option<std::fs::File>) -> Result<(), String> {
    step(
        "unshare time namespace",
        nix::sched::unshare(crate::kernel_check::CLONE_NEWTIME),
    )?;
    let offsets = spec
        .linux()
        .as_ref()
        .and_then(|l| l.time_offsets().clone())
        .unwrap_or_default();
    let mut text = String::new();
    for (clock, off) in &offsets {
        if !matches!(clock.as_str(), "monotonic" | "boottime") {
            return Err(format!(
                "linux.timeOffsets: unknown clock {clock:?} (monotonic or boottime)"
            ));
        }
        text.push_str(&format!(
            "{clock} {} {}\n",
            off.secs().unwrap_or(0),
            off.nanosecs().unwrap_or(0)
        ));
    }
    if let Some(mut f) = offsets_file.filter(|_| !text.is_empty()) {
        use std::io::Write;
        step("linux.timeOffsets", f.write_all(text.as_bytes()))?;
    }
    let ns = step(
        "open time namespace",
        std::fs::File::open("/proc/self/ns/time_for_children"),
    )?;
    step(
        "enter time namespace",
        nix::sched::setns(ns, crate::kernel_check::CLONE_NEWTIME),
    )
}

/// Builds the container; returns the state document for startContainer hooks.
fn setup(args: &InitArgs, chan: &mut Channel) -> Result<String, String> {
    let offsets_file = if args.time_ns {
        open_time_offsets(&args.spec)?
    } else {
        None
    };
    // Other processes in the container must not reach this process's memory or
    // /proc/<pid>/exe (the runtime binary) before it execs: CVE-2019-5736 class.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    join_namespaces(&args.join)?;
    if args.user_ns {
        step(
            "setresuid(0)",
            nix::unistd::setresuid(0.into(), 0.into(), 0.into()),
        )?;
        step(
            "setresgid(0)",
            nix::unistd::setresgid(0.into(), 0.into(), 0.into()),
        )?;
    }
    if args.cgroup_ns {
        step(
            "unshare cgroup namespace",
            nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP),
        )?;
    }
    if args.time_ns {
        enter_time_namespace(&args.spec, offsets_file)?;
    }
    if args.new_net_ns {
        step("bring up loopback", loopback_up())?;
    }
    step("setsid", nix::unistd::setsid())?;
    let spec = &args.spec;
    let default_process = Process::default();
    let process = spec.process().as_ref().unwrap_or(&default_process);
    if let Some(adj) = process.oom_score_adj() {
        step(
            "oom_score_adj",
            std::fs::write("/proc/self/oom_score_adj", adj.to_string()),
        )?;
    }
    // spec::validate guarantees a new mount namespace, so this never touches the host's mounts.
    let opts = RootfsOptions {
        user_namespace: args.user_ns,
        no_pivot: args.no_pivot,
        host_cgroup2: args.host_cgroup2.clone(),
        idmaps: args
            .idmaps
            .iter()
            .map(|(i, (fd, rec))| (*i, (fd.as_raw_fd(), *rec)))
            .collect(),
        overlay: args.overlay.clone(),
    };
    step(
        "rootfs",
        rootfs::mount_all(spec, &args.rootfs, &opts, &LinuxSyscall),
    )?;
    if process.terminal().unwrap_or(false) {
        let (master, slave) = step(
            "allocate terminal",
            console::open_pty(&console::ptmx_in(&args.rootfs.join(""))),
        )?;
        let console_path = args.rootfs.join("dev/console");
        step("dev/console", rootfs::create_target(&console_path, false))?;
        let slave_path = PathBuf::from(format!("/proc/self/fd/{}", slave.as_raw_fd()));
        step(
            "bind terminal on /dev/console",
            nix::mount::mount(
                Some(&slave_path),
                &console_path,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            ),
        )?;
        step("terminal", console::become_terminal(&slave))?;
        step(
            "send terminal",
            chan.send_with_fd(&Message::Console, Some(&master)),
        )?;
    }
    // prestart/createRuntime run in the runtime's namespaces now; createContainer here, in the
    // container's mount namespace but before pivot_root, so their paths resolve on the host.
    step("sync hooks", chan.send(&Message::HooksBeforePivot))?;
    let state = match chan.recv() {
        Ok(Some(Message::HooksDone(state))) => state,
        Ok(Some(Message::Error(e))) => return Err(e),
        _ => return Err("runtime went away during hooks".into()),
    };
    let hooks = spec.hooks().clone().unwrap_or_default();
    run_hooks_here(hooks.create_container().as_ref(), &state, None)
        .map_err(|e| format!("createContainer hook: {e}"))?;
    step(
        "rootfs",
        rootfs::enter(spec, &args.rootfs, &opts, &LinuxSyscall),
    )?;
    if args.uts_ns {
        if let Some(h) = spec.hostname() {
            step("sethostname", nix::unistd::sethostname(h))?;
        }
        if let Some(d) = spec.domainname() {
            // SAFETY: the pointer and length describe a live byte slice.
            let r = unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) };
            if r != 0 {
                return Err(format!(
                    "setdomainname: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
    }
    if spec.process().is_none() {
        // Nothing will be exec'd: `start` is refused (run() still closes every runtime fd).
        return Ok(state);
    }
    // execCPUAffinity is for exec'd processes only (runtime spec): init keeps its affinity.
    finalize_process(process, spec.linux().as_ref(), chan)?;
    Ok(state)
}

/// The process half shared by init and `exec`: scheduling and memory settings, rlimits,
/// seccomp, user, capabilities, umask, no_new_privs and a cwd that must lie inside the root.
/// The callers then close every runtime fd ([`close_fds_except`]).
pub fn finalize_process(
    process: &Process,
    linux: Option<&Linux>,
    chan: &mut Channel,
) -> Result<(), String> {
    // While the process still holds its capabilities: a lower nice value, a real-time policy
    // or class needs CAP_SYS_NICE / CAP_SYS_ADMIN.
    sched::apply_process(process)?;
    if let Some(linux) = linux {
        sched::apply_linux(linux)?;
    }
    let seccomp = linux.and_then(|l| l.seccomp().as_ref());
    for rl in process.rlimits().iter().flatten() {
        let name = serde_json::to_value(rl.typ())
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let res = rlimit_resource(&name)
            .ok_or_else(|| format!("process.rlimits: unknown type {name}"))?;
        let lim = libc::rlimit {
            rlim_cur: rl.soft(),
            rlim_max: rl.hard(),
        };
        // SAFETY: setrlimit reads a valid rlimit struct.
        if unsafe { libc::setrlimit(res, &lim) } != 0 {
            return Err(format!(
                "setrlimit {name}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    let nnp = process.no_new_privileges().unwrap_or(false);
    let filter = match seccomp {
        Some(s) => Some((
            step("linux.seccomp", seccomp::compile(s))?,
            seccomp::uses_notify(s),
        )),
        None => None,
    };
    // The working directory must lie inside the new root (CVE-2024-21626 class): after
    // pivot_root, a leaked host directory fd would show as "(unreachable)".
    step(
        &format!("process.cwd {}", process.cwd().display()),
        nix::unistd::chdir(process.cwd()),
    )?;
    let cwd = step("getcwd", nix::unistd::getcwd())?;
    if !cwd.starts_with("/") || cwd.to_string_lossy().contains("(unreachable)") {
        return Err(format!(
            "process.cwd {} resolves outside the container root",
            process.cwd().display()
        ));
    }
    // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: load it while we still
    // have it (as runc does). With no_new_privs, load it as late as possible.
    if !nnp {
        if let Some((f, notify)) = &filter {
            load_filter(f, *notify, chan)?;
        }
    }
    let user = process.user();
    // No `capabilities` means none at all (fail closed), not oci-spec's default sets.
    let caps = process
        .capabilities()
        .clone()
        .unwrap_or_else(no_capabilities);
    step("capability bounding set", drop_bounding(&caps))?;
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    let groups: Vec<nix::unistd::Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .map(|g| (*g).into())
        .collect();
    step("setgroups", nix::unistd::setgroups(&groups))?;
    step(
        "setgid",
        nix::unistd::setresgid(user.gid().into(), user.gid().into(), user.gid().into()),
    )?;
    step(
        "setuid",
        nix::unistd::setresuid(user.uid().into(), user.uid().into(), user.uid().into()),
    )?;
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
    step("capabilities", apply_caps(&caps))?;
    if let Some(umask) = user.umask() {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(umask));
    }
    if nnp {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(format!("no_new_privs: {}", std::io::Error::last_os_error()));
        }
    }
    if nnp {
        if let Some((f, notify)) = &filter {
            load_filter(f, *notify, chan)?;
        }
    }
    Ok(())
}

/// Gives up ownership of fds about to be closed by [`close_fds_except`] (so that nothing
/// closes them twice).
pub fn release_owned_fds(fds: impl Iterator<Item = OwnedFd>) {
    for fd in fds {
        let _ = std::os::fd::IntoRawFd::into_raw_fd(fd);
    }
}

/// Closes every fd from `first` up except those in `keep`, checking each `close_range`.
pub fn close_fds_except(first: i32, keep: &[std::os::fd::RawFd]) -> Result<(), String> {
    let mut keep: Vec<i32> = keep.iter().copied().filter(|k| *k >= first).collect();
    keep.sort_unstable();
    keep.dedup();
    let mut lo = first as u32;
    let mut ranges = Vec::new();
    for k in keep {
        if k as u32 > lo {
            ranges.push((lo, k as u32 - 1));
        }
        lo = k as u32 + 1;
    }
    ranges.push((lo, u32::MAX));
    for (a, b) in ranges {
        // SAFETY: close_range takes integers; the fds in range are owned by nothing that will
        // use them again (see release_owned_fds).
        let r = unsafe { libc::syscall(libc::SYS_close_range, a, b, 0) };
        if r != 0 {
            return Err(format!(
                "close runtime fds {a}..{b}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

fn load_filter(
    filter: &libseccomp::ScmpFilterContext,
    notify: bool,
    chan: &mut Channel,
) -> Result<(), String> {
    if let Some(fd) = step("seccomp", seccomp::load(filter, notify))? {
        step(
            "send seccomp notify fd",
            chan.send_with_fd(&Message::SeccompFd, Some(&fd)),
        )?;
    }
    Ok(())
}

fn rlimit_resource(name: &str) -> Option<libc::__rlimit_resource_t> {
    Some(match name {
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        _ => return None,
    })
}

/// A capability description with every set absent (oci-spec's `Default` fills them all).
pub fn no_capabilities() -> LinuxCapabilities {
    let mut c = LinuxCapabilities::default();
    c.set_bounding(None);
    c.set_effective(None);
    c.set_inheritable(None);
    c.set_permitted(None);
    c.set_ambient(None);
    c
}

/// Converts an OCI capability set to the `caps` crate's, keeping only capabilities this
/// kernel knows and the runtime itself may hold (its bounding set): a container never gets
/// more than the runtime has, and a request for more is trimmed (logged at debug level), not a
/// `capset` failure.
fn to_caps(set: &Option<oci_spec::runtime::Capabilities>) -> HashSet<caps::Capability> {
    let supported = caps::runtime::thread_all_supported();
    let held = caps::read(None, caps::CapSet::Bounding).unwrap_or_else(|_| supported.clone());
    set.iter()
        .flatten()
        .filter_map(|c| format!("CAP_{c}").parse::<caps::Capability>().ok())
        .filter(|c| {
            let ok = supported.contains(c) && held.contains(c);
            if !ok {
                tracing::debug!(capability = %c, "not held by the runtime; left out");
            }
            ok
        })
        .collect()
}

fn drop_bounding(caps: &LinuxCapabilities) -> Result<(), caps::errors::CapsError> {
    let keep = to_caps(caps.bounding());
    for c in caps::runtime::thread_all_supported() {
        if !keep.contains(&c) {
            caps::drop(None, caps::CapSet::Bounding, c)?;
        }
    }
    Ok(())
}

fn apply_caps(caps: &LinuxCapabilities) -> Result<(), caps::errors::CapsError> {
    caps::set(None, caps::CapSet::Effective, &HashSet::new())?;
    caps::set(None, caps::CapSet::Permitted, &to_caps(caps.permitted()))?;
    caps::set(
        None,
        caps::CapSet::Inheritable,
        &to_caps(caps.inheritable()),
    )?;
    caps::set(None, caps::CapSet::Effective, &to_caps(caps.effective()))?;
    caps::clear(None, caps::CapSet::Ambient)?;
    // The kernel only lets a capability be ambient if it is permitted and inheritable; like
    // runc, others are left out instead of failing the container (logged at debug level: init's
    // stderr is the container's).
    let permitted = to_caps(caps.permitted());
    let inheritable = to_caps(caps.inheritable());
    for c in to_caps(caps.ambient()) {
        if permitted.contains(&c) && inheritable.contains(&c) {
            caps::raise(None, caps::CapSet::Ambient, c)?;
        } else {
            tracing::debug!(capability = %c, "ambient needs it permitted and inheritable; left out");
        }
    }
    Ok(())
}

/// Finds `program` on the container's `PATH` (from the spec's env), as execvp would.
pub fn resolve_program(program: &str, env: &[String]) -> PathBuf {
    if program.contains('/') {
        return PathBuf::from(program);
    }
    let path = env
        .iter()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(program);
        if candidate.is_file() {
            return candidate;
        }
    }
    PathBuf::from(program)
}

/// Fails unless `process.args[0]` resolves to an executable file in the current root.
pub fn check_program(process: &Process) -> Result<(), String> {
    let args = process.args().clone().unwrap_or_default();
    let first = args.first().ok_or("process.args is empty")?;
    let env = process.env().clone().unwrap_or_default();
    let program = resolve_program(first, &env);
    match std::fs::metadata(&program) {
        Ok(md) if md.is_file() => Ok(()),
        Ok(_) => Err(format!("process.args[0] {first:?}: not a regular file")),
        Err(e) => Err(format!("process.args[0] {first:?}: {e}")),
    }
}

/// Execs the process; returns why it could not.
pub fn exec_process(process: Option<&Process>) -> String {
    let Some(process) = process else {
        return "process missing".into();
    };
    let args = process.args().clone().unwrap_or_default();
    let env = process.env().clone().unwrap_or_default();
    let program = resolve_program(&args[0], &env);
    let to_c = |s: &str| CString::new(s.as_bytes()).unwrap_or_default();
    let c_args: Vec<CString> = args.iter().map(|a| to_c(a)).collect();
    let c_env: Vec<CString> = env.iter().map(|e| to_c(e)).collect();
    let c_prog = to_c(&program.to_string_lossy());
    match nix::unistd::execve(&c_prog, &c_args, &c_env) {
        Ok(_) => unreachable!("execve returned success"),
        Err(e) => format!("{}: {e}", args[0]),
    }
}
