//! Idmapped bind mounts (`mounts[].uidMappings`/`gidMappings`, options `idmap`/`ridmap`).
//!
//! The runtime makes a user namespace holding the mount's mappings (a short-lived helper
//! process in a new user namespace; the runtime writes its maps and keeps an fd to the
//! namespace), and init attaches a clone of the source tree with `MOUNT_ATTR_IDMAP` set to that
//! namespace (`open_tree` + `mount_setattr` + `move_mount`).

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxIdMapping, Mount};

/// Errors while preparing an idmapped mount.
#[derive(Debug, thiserror::Error)]
pub enum IdmapError {
    /// The mount gives mappings for one of uid/gid only.
    #[error("mounts[{0}]: uidMappings and gidMappings must be given together")]
    Incomplete(usize),
    /// An idmap option without mappings.
    #[error("mounts[{0}]: \"idmap\"/\"ridmap\" needs uidMappings and gidMappings")]
    NoMappings(usize),
    /// An idmapped mount that is not a bind mount.
    #[error("mounts[{0}]: only bind mounts can be idmapped")]
    NotBind(usize),
    /// The helper namespace could not be made.
    #[error("idmap user namespace: {0}")]
    Namespace(String),
}

/// Whether mount `m` asks to be idmapped, and recursively.
pub fn idmap_request(i: usize, m: &Mount) -> Result<Option<bool>, IdmapError> {
    let opts = m.options().clone().unwrap_or_default();
    let recursive = opts.iter().any(|o| o == "ridmap");
    let flagged = recursive || opts.iter().any(|o| o == "idmap");
    let (uids, gids) = (m.uid_mappings().is_some(), m.gid_mappings().is_some());
    if uids != gids {
        return Err(IdmapError::Incomplete(i));
    }
    if !uids {
        return if flagged {
            Err(IdmapError::NoMappings(i))
        } else {
            Ok(None)
        };
    }
    let bind =
        m.typ().as_deref() == Some("bind") || opts.iter().any(|o| o == "bind" || o == "rbind");
    if !bind {
        return Err(IdmapError::NotBind(i));
    }
    Ok(Some(recursive))
}

fn map_text(maps: &[LinuxIdMapping]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect()
}

/// A user namespace with `uid`/`gid` mappings, as an fd (the helper that held it is gone).
pub fn userns_with(uid: &[LinuxIdMapping], gid: &[LinuxIdMapping]) -> Result<OwnedFd, IdmapError> {
    let err = |what: &str, e: &dyn std::fmt::Display| IdmapError::Namespace(format!("{what}: {e}"));
    // The helper blocks reading its end until the runtime is done with it and kills it (or
    // the runtime dies, which closes the other end).
    let (ours, theirs) =
        std::os::unix::net::UnixStream::pair().map_err(|e| err("socketpair", &e))?;
    let wr_fd = theirs.as_raw_fd();
    let mut stack = vec![0u8; 64 * 1024];
    let cb = Box::new(move || -> isize {
        // Wait until the parent has written the maps and opened the namespace.
        let mut b = [0u8; 1];
        // SAFETY: read(2) into a live one-byte buffer on an inherited fd.
        unsafe { libc::read(wr_fd, b.as_mut_ptr().cast(), 1) };
        0
    });
    // SAFETY: the helper only blocks in read(2) on its own stack and returns.
    let pid = unsafe {
        nix::sched::clone(
            cb,
            &mut stack,
            CloneFlags::CLONE_NEWUSER,
            Some(libc::SIGCHLD),
        )
    }
    .map_err(|e| err("clone", &e))?;
    let result = (|| {
        std::fs::write(format!("/proc/{pid}/uid_map"), map_text(uid))
            .map_err(|e| err("uid_map", &e))?;
        std::fs::write(format!("/proc/{pid}/setgroups"), "deny").ok();
        std::fs::write(format!("/proc/{pid}/gid_map"), map_text(gid))
            .map_err(|e| err("gid_map", &e))?;
        std::fs::File::open(format!("/proc/{pid}/ns/user"))
            .map(OwnedFd::from)
            .map_err(|e| err("open namespace", &e))
    })();
    drop(theirs);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(pid, None);
    drop(ours);
    result
}

/// The idmap user namespaces for a spec's mounts, keyed by mount index.
pub fn prepare(mounts: &[Mount]) -> Result<HashMap<usize, (OwnedFd, bool)>, IdmapError> {
    let mut out = HashMap::new();
    for (i, m) in mounts.iter().enumerate() {
        if let Some(recursive) = idmap_request(i, m)? {
            let fd = userns_with(
                m.uid_mappings().as_deref().unwrap_or_default(),
                m.gid_mappings().as_deref().unwrap_or_default(),
            )?;
            out.insert(i, (fd, recursive));
        }
    }
    Ok(out)
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// `struct mount_attr`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn check(r: libc::c_long) -> nix::Result<libc::c_long> {
    if r < 0 {
        Err(nix::errno::Errno::last())
    } else {
        Ok(r)
    }
}

/// mount_setattr(2) relative to `dirfd` (an `AT_FDCWD` path, or a tree fd with `AT_EMPTY_PATH`).
fn mount_setattr(
    dirfd: RawFd,
    path: &std::ffi::CStr,
    flags: libc::c_uint,
    attr: &MountAttr,
) -> nix::Result<()> {
    // SAFETY: mount_setattr reads a NUL-terminated path and a live mount_attr of the given size.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            path.as_ptr(),
            flags,
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })?;
    Ok(())
}

/// Sets and clears `MOUNT_ATTR_*` bits on the mount at `target`, and with `recursive` on every
/// mount below it (the recursive mount options `rro`, `rnosuid`, …).
pub fn set_mount_attr(target: &Path, set: u64, clr: u64, recursive: bool) -> nix::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(target.as_os_str().as_bytes())
        .map_err(|_| nix::errno::Errno::EINVAL)?;
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clr,
        propagation: 0,
        userns_fd: 0,
    };
    let rec = if recursive { AT_RECURSIVE } else { 0 };
    mount_setattr(
        libc::AT_FDCWD,
        &path,
        rec | libc::AT_SYMLINK_NOFOLLOW as libc::c_uint,
        &attr,
    )
}

/// Bind-mounts `source` on `target` with its ids mapped through `userns`.
pub fn idmapped_bind(
    source: &Path,
    target: &Path,
    userns: RawFd,
    recursive: bool,
) -> nix::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let cstr = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|_| nix::errno::Errno::EINVAL)
    };
    let src = cstr(source)?;
    let dst = cstr(target)?;
    let empty = c"";
    let rec = if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: open_tree reads a NUL-terminated path and returns a new detached-tree fd.
    let tree = check(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            src.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | rec,
        )
    })?;
    // SAFETY: the fd was just returned to us.
    let tree = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(tree as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns as u64,
    };
    mount_setattr(
        tree.as_raw_fd(),
        empty,
        libc::AT_EMPTY_PATH as libc::c_uint | rec,
        &attr,
    )?;
    // SAFETY: move_mount reads NUL-terminated paths; the tree fd is ours.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            dst.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(json: &str) -> Mount {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn requests_are_validated() {
        let ok = mount(
            r#"{"destination":"/m","type":"bind","source":"/s","options":["rbind","ridmap"],
            "uidMappings":[{"containerID":0,"hostID":1000,"size":1}],"gidMappings":[{"containerID":0,"hostID":1000,"size":1}]}"#,
        );
        assert_eq!(idmap_request(0, &ok).unwrap(), Some(true));
        let plain = mount(r#"{"destination":"/m","type":"bind","source":"/s","options":["bind"]}"#);
        assert_eq!(idmap_request(0, &plain).unwrap(), None);
        let half = mount(
            r#"{"destination":"/m","type":"bind","source":"/s","uidMappings":[{"containerID":0,"hostID":1,"size":1}]}"#,
        );
        assert!(matches!(
            idmap_request(3, &half),
            Err(IdmapError::Incomplete(3))
        ));
        let flag_only =
            mount(r#"{"destination":"/m","type":"bind","source":"/s","options":["idmap"]}"#);
        assert!(idmap_request(0, &flag_only).is_err());
        let tmpfs = mount(
            r#"{"destination":"/m","type":"tmpfs","source":"tmpfs",
            "uidMappings":[{"containerID":0,"hostID":1,"size":1}],"gidMappings":[{"containerID":0,"hostID":1,"size":1}]}"#,
        );
        assert!(matches!(
            idmap_request(1, &tmpfs),
            Err(IdmapError::NotBind(1))
        ));
    }
}
