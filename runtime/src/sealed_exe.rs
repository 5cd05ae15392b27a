//! Runs the runtime from an immutable view of its own binary (CVE-2019-5736 class).
//!
//! A process inside a container could open `/proc/<runtime pid>/exe` while the runtime is
//! joining the container and write to the host's runtime binary. Before doing anything
//! container-related, the runtime re-executes itself from a view that cannot be written:
//!
//! 1. preferred (as runc 1.2): the binary's directory as the only layer of a read-only
//!    overlayfs that is created with the new mount API and never attached to any mount tree
//!    (`fsopen`/`fsconfig`/`fsmount`): no copy, and the host's mounts are untouched;
//! 2. fallback: a sealed memfd copy of the binary (`F_SEAL_WRITE` and friends).
//!
//! Either way `/proc/<pid>/exe` then names a file whose writes fail.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::fcntl::{FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};

/// Set in the environment of the re-executed copy.
const MARKER: &str = "_PODLET_SEALED_EXE";

/// Errors while making or entering the sealed copy.
#[derive(Debug, thiserror::Error)]
#[error("sealed runtime copy: {0}: {1}")]
pub struct SealError(&'static str, String);

/// True if this process already runs from a view of its binary that cannot be written: a
/// sealed memfd, or a file on a read-only mount.
pub fn is_sealed() -> bool {
    if std::env::var_os(MARKER).is_none() {
        return false;
    }
    let exe = std::fs::read_link("/proc/self/exe").unwrap_or_default();
    if exe.to_string_lossy().starts_with("/memfd:") {
        return true;
    }
    nix::sys::statvfs::statvfs("/proc/self/exe")
        .map(|v| v.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
        .unwrap_or(false)
}

const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOUNT_ATTR_RDONLY: libc::c_uint = 0x1;
const MOUNT_ATTR_NODEV: libc::c_uint = 0x4;

fn sys_fd(r: libc::c_long, what: &'static str) -> Result<OwnedFd, SealError> {
    if r < 0 {
        return Err(SealError(what, std::io::Error::last_os_error().to_string()));
    }
    // SAFETY: the syscall returned a new fd that this process owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// An empty, root-only directory in the state root: the overlay's second layer.
fn empty_layer(state_root: &Path) -> Result<std::path::PathBuf, SealError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let dir = state_root.join(".exe-layer");
    let err = |e: std::io::Error| SealError("empty layer", format!("{}: {e}", dir.display()));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(err)?;
    let md = std::fs::symlink_metadata(&dir).map_err(err)?;
    let is_empty = std::fs::read_dir(&dir).map_err(err)?.next().is_none();
    if !md.is_dir() || md.uid() != 0 || !is_empty {
        return Err(SealError(
            "empty layer",
            format!("{} is not an empty root-owned directory", dir.display()),
        ));
    }
    Ok(dir)
}

/// Opens this binary through a detached, read-only overlayfs of its directory.
fn open_readonly_view(state_root: &Path) -> Result<File, SealError> {
    let exe = std::fs::read_link("/proc/self/exe").map_err(|e| SealError("exe", e.to_string()))?;
    let (Some(dir), Some(name)) = (exe.parent(), exe.file_name()) else {
        return Err(SealError(
            "exe",
            format!("{} has no directory", exe.display()),
        ));
    };
    let c = |b: &[u8]| CString::new(b).map_err(|e| SealError("path", e.to_string()));
    let fstype = c(b"overlay")?;
    // SAFETY: fsopen reads a NUL-terminated name and returns a new fd.
    let fs = sys_fd(
        unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) },
        "fsopen overlay",
    )?;
    // overlayfs wants two layers when it has no upper directory: the binary's directory above
    // an empty one. The mount is read-only and never attached anywhere.
    let empty = empty_layer(state_root)?;
    let key = c(b"lowerdir")?;
    let mut layers = dir.as_os_str().as_bytes().to_vec();
    layers.push(b':');
    layers.extend_from_slice(empty.as_os_str().as_bytes());
    let value = c(&layers)?;
    // SAFETY: fsconfig reads NUL-terminated key and value strings.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_SET_STRING,
            key.as_ptr(),
            value.as_ptr(),
            0,
        )
    };
    if r < 0 {
        return Err(SealError(
            "fsconfig lowerdir",
            std::io::Error::last_os_error().to_string(),
        ));
    }
    // SAFETY: FSCONFIG_CMD_CREATE takes no pointers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<u8>(),
            std::ptr::null::<u8>(),
            0,
        )
    };
    if r < 0 {
        return Err(SealError(
            "fsconfig create",
            std::io::Error::last_os_error().to_string(),
        ));
    }
    // SAFETY: fsmount takes integer arguments and returns a detached mount fd.
    let mnt = sys_fd(
        unsafe {
            libc::syscall(
                libc::SYS_fsmount,
                fs.as_raw_fd(),
                FSMOUNT_CLOEXEC,
                MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV,
            )
        },
        "fsmount",
    )?;
    let fd = nix::fcntl::openat(
        Some(mnt.as_raw_fd()),
        Path::new(name),
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| SealError("open binary in overlay", e.to_string()))?;
    // SAFETY: openat returned a new fd that this process owns.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// A sealed memfd copy of this binary.
fn sealed_copy() -> Result<File, SealError> {
    let name = CString::new("podlet-runc").map_err(|e| SealError("name", e.to_string()))?;
    let fd = memfd_create(
        &name,
        MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
    )
    .map_err(|e| SealError("memfd_create", e.to_string()))?;
    let mut copy = File::from(fd);
    let mut exe = File::open("/proc/self/exe").map_err(|e| SealError("open", e.to_string()))?;
    std::io::copy(&mut exe, &mut copy).map_err(|e| SealError("copy", e.to_string()))?;
    let seals = SealFlag::F_SEAL_SEAL
        | SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_WRITE;
    nix::fcntl::fcntl(copy.as_raw_fd(), FcntlArg::F_ADD_SEALS(seals))
        .map_err(|e| SealError("seal", e.to_string()))?;
    Ok(copy)
}

/// Re-executes this process from a view of its binary that cannot be written, with the same
/// argv. Returns only on failure (or at once when already running from one).
/// `state_root` holds the overlay's empty second layer.
pub fn reexec_sealed(args: &[OsString], state_root: &Path) -> Result<(), SealError> {
    if is_sealed() {
        std::env::remove_var(MARKER);
        return Ok(());
    }
    let copy = match open_readonly_view(state_root) {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!("read-only overlay view unavailable ({e}); copying to a memfd");
            sealed_copy()?
        }
    };
    let to_c = |s: &std::ffi::OsStr| CString::new(s.as_bytes()).unwrap_or_default();
    let argv: Vec<CString> = args.iter().map(|a| to_c(a)).collect();
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k != MARKER)
        .map(|(k, v)| {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            to_c(&kv)
        })
        .collect();
    env.push(to_c(format!("{MARKER}=1").as_ref()));
    let e = nix::unistd::fexecve(copy.as_raw_fd(), &argv, &env).unwrap_err();
    Err(SealError("fexecve", e.to_string()))
}
