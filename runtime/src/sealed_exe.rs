//! Runs the runtime from a sealed, in-memory copy of its own binary (CVE-2019-5736 class).
//!
//! A process inside a container could open `/proc/<runtime pid>/exe` while the runtime is
//! joining the container and write to the host's runtime binary. Before doing anything
//! container-related, the runtime copies itself into a memfd, seals it against any write,
//! and re-executes from it: `/proc/<pid>/exe` then names an immutable anonymous file.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;

use nix::fcntl::{FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};

/// Set in the environment of the re-executed copy.
const MARKER: &str = "_PODLET_SEALED_EXE";

/// Errors while making or entering the sealed copy.
#[derive(Debug, thiserror::Error)]
#[error("sealed runtime copy: {0}: {1}")]
pub struct SealError(&'static str, String);

/// True if this process already runs from a sealed memfd copy.
pub fn is_sealed() -> bool {
    let exe = std::fs::read_link("/proc/self/exe").unwrap_or_default();
    std::env::var_os(MARKER).is_some() && exe.to_string_lossy().starts_with("/memfd:")
}

/// Re-executes this process from a sealed memfd copy of its binary, with the same argv.
/// Returns only on failure (or at once when already sealed).
pub fn reexec_sealed(args: &[OsString]) -> Result<(), SealError> {
    if is_sealed() {
        std::env::remove_var(MARKER);
        return Ok(());
    }
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
