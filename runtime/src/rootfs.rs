//! Building the container's root filesystem inside its own mount namespace.
//!
//! Order: mark `/` with the rootfs propagation (never the host's: the caller guarantees a new
//! mount namespace), bind the rootfs onto itself (pivot_root needs a mount point), mount the
//! spec's mounts in order (every destination resolved inside the rootfs without following
//! symlinks out of it), create devices and `/dev` symlinks, pivot_root, then masked and
//! read-only paths and the read-only root.

use std::fs;
use std::path::{Component, Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::SFlag;
use oci_spec::runtime::{LinuxDeviceType, Spec};

use crate::mount_options;
use crate::syscall::Syscall;

/// Errors while building the root filesystem, one variant per step.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// Changing the propagation of `/` failed.
    #[error("set rootfs propagation: {0}")]
    Propagation(nix::Error),
    /// Binding the rootfs onto itself failed.
    #[error("bind rootfs {0}: {1}")]
    BindRootfs(PathBuf, nix::Error),
    /// A spec mount failed.
    #[error("mount {what} on {dest}: {err}")]
    Mount {
        /// The mount's source or type.
        what: String,
        /// The destination inside the container.
        dest: PathBuf,
        /// The error.
        err: String,
    },
    /// A path resolved outside the rootfs or had too many symlinks.
    #[error("path {0}: {1}")]
    Path(PathBuf, String),
    /// Creating a device node failed.
    #[error("create device {0}: {1}")]
    Device(PathBuf, nix::Error),
    /// pivot_root or its cleanup failed.
    #[error("pivot_root into {0}: {1}")]
    PivotRoot(PathBuf, nix::Error),
    /// Masking or making a path read-only failed.
    #[error("protect {0}: {1}")]
    Protect(PathBuf, nix::Error),
    /// Writing a sysctl failed.
    #[error("sysctl {0}: {1}")]
    Sysctl(String, std::io::Error),
}

/// Resolves `unsafe_path` inside `root` as if `root` were `/`: `..` stops at the root and
/// symlinks (absolute or relative) are followed within it. The result never leaves `root`.
pub fn secure_join(root: &Path, unsafe_path: &Path) -> Result<PathBuf, RootfsError> {
    let mut resolved = PathBuf::new();
    let mut pending: Vec<PathBuf> = unsafe_path
        .components()
        .rev()
        .map(|c| PathBuf::from(c.as_os_str()))
        .collect();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        match part.components().next() {
            Some(Component::RootDir) | Some(Component::CurDir) | None => continue,
            Some(Component::ParentDir) => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        let candidate = root.join(&resolved).join(&part);
        match fs::symlink_metadata(&candidate) {
            Ok(md) if md.file_type().is_symlink() => {
                links += 1;
                if links > 40 {
                    return Err(RootfsError::Path(
                        unsafe_path.to_path_buf(),
                        "too many levels of symbolic links".into(),
                    ));
                }
                let target = fs::read_link(&candidate)
                    .map_err(|e| RootfsError::Path(candidate.clone(), e.to_string()))?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                for c in target.components().rev() {
                    pending.push(PathBuf::from(c.as_os_str()));
                }
            }
            _ => resolved.push(&part),
        }
    }
    Ok(root.join(resolved))
}

fn mount_err(what: &str, dest: &Path, err: impl std::fmt::Display) -> RootfsError {
    RootfsError::Mount {
        what: what.to_string(),
        dest: dest.to_path_buf(),
        err: err.to_string(),
    }
}

/// A bind remount (`flags` must hold `MS_REMOUNT | MS_BIND`) that keeps the flags a user
/// namespace locked: when the kernel refuses (EPERM), the mount's current nosuid, nodev,
/// noexec, atime and nosymfollow flags are added and the remount is tried once more, as runc
/// does. Outside a user namespace the first call succeeds.
fn remount(sys: &dyn Syscall, target: &Path, flags: MsFlags) -> nix::Result<()> {
    match sys.mount(None, target, None, flags, None) {
        Err(nix::errno::Errno::EPERM) => {
            let mut kept = sys.lockable_flags(target)?;
            // An atime mode the caller chose is not overridden; a locked one will still fail.
            let atime = MsFlags::MS_NOATIME | MsFlags::MS_RELATIME | MsFlags::MS_STRICTATIME;
            if flags.intersects(atime) {
                kept.remove(atime);
            }
            sys.mount(None, target, None, flags | kept, None)
        }
        r => r,
    }
}

/// Default device nodes every container gets: (name, major, minor).
const DEFAULT_DEVICES: &[(&str, u64, u64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// The mount point (from `/proc/self/mountinfo`) that contains `path`.
fn parent_mount_point(path: &Path) -> PathBuf {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(crate::cgroups::unescape_mountinfo(m)))
        .filter(|m| path.starts_with(m))
        .max_by_key(|m| m.as_os_str().len())
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// Options for [`prepare`].
#[derive(Debug, Clone, Default)]
pub struct RootfsOptions {
    /// Whether the container has its own user namespace (devices are bind-mounted, not made).
    pub user_namespace: bool,
    /// Use `MS_MOVE` + chroot instead of pivot_root (`--no-pivot`).
    pub no_pivot: bool,
    /// The runtime's cgroup2 mount, when the container shares the runtime's cgroup namespace:
    /// a `cgroup` mount then binds it (same content as a fresh mount, which costs a cgroup
    /// root lookup of tens of milliseconds in the initial cgroup namespace).
    pub host_cgroup2: Option<PathBuf>,
    /// Idmapped bind mounts: mount index → (user namespace fd, recursive).
    pub idmaps: std::collections::HashMap<usize, (std::os::fd::RawFd, bool)>,
    /// overlayfs mount data: the rootfs is an overlay mounted here, in the container's mount
    /// namespace (image snapshots), instead of a bind of the bundle's directory.
    pub overlay: Option<String>,
}

/// Sets up the rootfs at `rootfs` per `spec` and makes it the process's root: [`mount_all`]
/// then [`enter`].
pub fn prepare(
    spec: &Spec,
    rootfs: &Path,
    opts: &RootfsOptions,
    sys: &dyn Syscall,
) -> Result<(), RootfsError> {
    mount_all(spec, rootfs, opts, sys)?;
    enter(spec, rootfs, opts, sys)
}

/// First stage: propagation, the rootfs bind, the spec's mounts, devices and sysctls, all
/// below `rootfs` (the host root is still `/`, where createContainer hooks resolve).
pub fn mount_all(
    spec: &Spec,
    rootfs: &Path,
    opts: &RootfsOptions,
    sys: &dyn Syscall,
) -> Result<(), RootfsError> {
    let linux = spec.linux().as_ref();
    // Our own mount namespace: this changes only the container's view. Slave first, so nothing
    // below propagates back out; the configured propagation is applied after pivot_root.
    sys.mount(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None,
    )
    .map_err(RootfsError::Propagation)?;
    // pivot_root refuses a new root whose parent mount is shared (e.g. after a "shared"
    // rootfsPropagation in a joined namespace): make that parent private.
    let parent = parent_mount_point(rootfs);
    sys.mount(None, &parent, None, MsFlags::MS_PRIVATE, None)
        .map_err(RootfsError::Propagation)?;
    match &opts.overlay {
        Some(data) => sys.mount(
            Some(Path::new("overlay")),
            rootfs,
            Some("overlay"),
            MsFlags::empty(),
            Some(data),
        ),
        None => sys.mount(
            Some(rootfs),
            rootfs,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        ),
    }
    .map_err(|e| RootfsError::BindRootfs(rootfs.to_path_buf(), e))?;

    let mut dev_is_tmpfs = false;
    for (index, m) in spec.mounts().iter().flatten().enumerate() {
        let opts_list = m.options().clone().unwrap_or_default();
        let parsed = mount_options::parse(&opts_list);
        let dest = secure_join(rootfs, m.destination())?;
        let typ = m
            .typ()
            .as_deref()
            .unwrap_or(if parsed.bind { "bind" } else { "none" });
        if m.destination() == Path::new("/dev") && typ == "tmpfs" {
            dev_is_tmpfs = true;
        }
        if parsed.bind || typ == "bind" {
            let source = m
                .source()
                .clone()
                .ok_or_else(|| mount_err("bind", &dest, "bind mount without a source"))?;
            let src_md = fs::metadata(&source)
                .map_err(|e| mount_err(&source.display().to_string(), &dest, e))?;
            create_target(&dest, src_md.is_dir())?;
            let rec = parsed.flags & MsFlags::MS_REC;
            match opts.idmaps.get(&index) {
                Some((userns, recursive)) => sys
                    .idmapped_bind(&source, &dest, *userns, *recursive)
                    .map_err(|e| mount_err("idmapped bind", &dest, e))?,
                None => sys
                    .mount(Some(&source), &dest, None, MsFlags::MS_BIND | rec, None)
                    .map_err(|e| mount_err(&source.display().to_string(), &dest, e))?,
            }
            let extra = parsed.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC);
            if !extra.is_empty() {
                remount(
                    sys,
                    &dest,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | rec | extra,
                )
                .map_err(|e| mount_err("remount", &dest, e))?;
            }
        } else {
            create_target(&dest, true)?;
            let fstype = if typ == "cgroup" { "cgroup2" } else { typ };
            let source = m.source().clone().unwrap_or_else(|| PathBuf::from(fstype));
            let data = if parsed.data.is_empty() {
                None
            } else {
                Some(parsed.data.as_str())
            };
            let mut result = match (&opts.host_cgroup2, fstype) {
                (Some(host), "cgroup2") => sys
                    .mount(Some(host), &dest, None, MsFlags::MS_BIND, None)
                    .and_then(|_| {
                        remount(
                            sys,
                            &dest,
                            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | parsed.flags,
                        )
                    }),
                _ => sys.mount(Some(&source), &dest, Some(fstype), parsed.flags, data),
            };
            // sysfs and cgroup2 cannot be mounted fresh in a user namespace without a net/cgroup
            // namespace of its own; bind the host's as runc does.
            if result.is_err() && matches!(fstype, "sysfs" | "cgroup2" | "mqueue") {
                let host = match fstype {
                    "sysfs" => "/sys",
                    "mqueue" => "/dev/mqueue",
                    _ => "/sys/fs/cgroup",
                };
                result = sys.mount(
                    Some(Path::new(host)),
                    &dest,
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None,
                );
                if result.is_ok() && parsed.flags.contains(MsFlags::MS_RDONLY) {
                    result = remount(
                        sys,
                        &dest,
                        MsFlags::MS_BIND
                            | MsFlags::MS_REMOUNT
                            | MsFlags::MS_REC
                            | MsFlags::MS_RDONLY,
                    );
                }
            }
            result.map_err(|e| mount_err(fstype, &dest, e))?;
        }
        if parsed.rec_attr_set != 0 || parsed.rec_attr_clr != 0 {
            sys.set_mount_attr_recursive(&dest, parsed.rec_attr_set, parsed.rec_attr_clr)
                .map_err(|e| mount_err("recursive mount attributes", &dest, e))?;
        }
        if !parsed.propagation.is_empty() {
            sys.mount(None, &dest, None, parsed.propagation, None)
                .map_err(|e| mount_err("propagation", &dest, e))?;
        }
    }

    create_devices(spec, rootfs, opts.user_namespace, dev_is_tmpfs, sys)?;
    if let Some(linux) = linux {
        for (key, value) in linux.sysctl().iter().flatten() {
            let path = secure_join(rootfs, &Path::new("/proc/sys").join(key.replace('.', "/")))?;
            fs::write(&path, value).map_err(|e| RootfsError::Sysctl(key.clone(), e))?;
        }
    }
    Ok(())
}

/// Second stage: pivot_root (or move + chroot), then read-only and masked paths and the
/// read-only root.
pub fn enter(
    spec: &Spec,
    rootfs: &Path,
    opts: &RootfsOptions,
    sys: &dyn Syscall,
) -> Result<(), RootfsError> {
    let linux = spec.linux().as_ref();
    if opts.no_pivot {
        sys.chdir(rootfs)
            .map_err(|e| RootfsError::PivotRoot(rootfs.to_path_buf(), e))?;
        sys.mount(Some(rootfs), Path::new("/"), None, MsFlags::MS_MOVE, None)
            .map_err(|e| RootfsError::PivotRoot(rootfs.to_path_buf(), e))?;
        nix::unistd::chroot(".").map_err(|e| RootfsError::PivotRoot(rootfs.to_path_buf(), e))?;
    } else {
        // pivot_root(".", ".") stacks the old root under the new one; detach it right away.
        sys.chdir(rootfs)
            .map_err(|e| RootfsError::PivotRoot(rootfs.to_path_buf(), e))?;
        sys.pivot_root(Path::new("."), Path::new("."))
            .map_err(|e| RootfsError::PivotRoot(rootfs.to_path_buf(), e))?;
        // Make the old root a slave first so the detach cannot propagate anywhere.
        sys.mount(
            None,
            Path::new("."),
            None,
            MsFlags::MS_SLAVE | MsFlags::MS_REC,
            None,
        )
        .map_err(|e| RootfsError::PivotRoot(rootfs.to_path_buf(), e))?;
        sys.umount2(Path::new("."), MntFlags::MNT_DETACH)
            .map_err(|e| RootfsError::PivotRoot(rootfs.to_path_buf(), e))?;
    }
    sys.chdir(Path::new("/"))
        .map_err(|e| RootfsError::PivotRoot(rootfs.to_path_buf(), e))?;
    let propagation =
        mount_options::rootfs_propagation(linux.and_then(|l| l.rootfs_propagation().as_deref()));
    sys.mount(None, Path::new("/"), None, propagation, None)
        .map_err(RootfsError::Propagation)?;

    if let Some(linux) = linux {
        for p in linux.readonly_paths().iter().flatten() {
            let path = Path::new(p);
            if !path.exists() {
                continue;
            }
            sys.mount(
                Some(path),
                path,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )
            .map_err(|e| RootfsError::Protect(path.into(), e))?;
            remount(
                sys,
                path,
                MsFlags::MS_BIND
                    | MsFlags::MS_REMOUNT
                    | MsFlags::MS_REC
                    | MsFlags::MS_RDONLY
                    | MsFlags::MS_NOSUID
                    | MsFlags::MS_NODEV
                    | MsFlags::MS_NOEXEC,
            )
            .map_err(|e| RootfsError::Protect(path.into(), e))?;
        }
        for p in linux.masked_paths().iter().flatten() {
            let path = Path::new(p);
            match fs::metadata(path) {
                Ok(md) if md.is_dir() => sys.mount(
                    Some(Path::new("tmpfs")),
                    path,
                    Some("tmpfs"),
                    MsFlags::MS_RDONLY,
                    None,
                ),
                Ok(_) => sys.mount(
                    Some(Path::new("/dev/null")),
                    path,
                    None,
                    MsFlags::MS_BIND,
                    None,
                ),
                Err(_) => continue,
            }
            .map_err(|e| RootfsError::Protect(path.into(), e))?;
        }
    }
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        remount(
            sys,
            Path::new("/"),
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        )
        .map_err(|e| RootfsError::Protect("/".into(), e))?;
    }
    Ok(())
}

pub(crate) fn create_target(dest: &Path, dir: bool) -> Result<(), RootfsError> {
    let r = if dir {
        fs::create_dir_all(dest)
    } else {
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| RootfsError::Path(dest.into(), e.to_string()))?;
        }
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dest)
            .map(|_| ())
    };
    r.map_err(|e| RootfsError::Path(dest.into(), e.to_string()))
}

/// A device to create: path in the container, kind, mode, major, minor, optional owner.
type DeviceNode = (PathBuf, SFlag, u32, u64, u64, Option<(u32, u32)>);

fn create_devices(
    spec: &Spec,
    rootfs: &Path,
    user_ns: bool,
    dev_is_tmpfs: bool,
    sys: &dyn Syscall,
) -> Result<(), RootfsError> {
    let dev = secure_join(rootfs, Path::new("/dev"))?;
    create_target(&dev, true)?;
    let mut nodes: Vec<DeviceNode> = Vec::new();
    if dev_is_tmpfs {
        for (name, major, minor) in DEFAULT_DEVICES {
            nodes.push((
                PathBuf::from(format!("/dev/{name}")),
                SFlag::S_IFCHR,
                0o666,
                *major,
                *minor,
                None,
            ));
        }
    }
    for d in spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().as_ref())
        .into_iter()
        .flatten()
    {
        let kind = match d.typ() {
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            _ => SFlag::S_IFCHR,
        };
        let owner = match (d.uid(), d.gid()) {
            (None, None) => None,
            (u, g) => Some((u.unwrap_or(0), g.unwrap_or(0))),
        };
        nodes.push((
            d.path().clone(),
            kind,
            d.file_mode().unwrap_or(0o666),
            d.major() as u64,
            d.minor() as u64,
            owner,
        ));
    }
    for (path, kind, mode, major, minor, owner) in nodes {
        let target = secure_join(rootfs, &path)?;
        let _ = fs::remove_file(&target);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| RootfsError::Path(target.clone(), e.to_string()))?;
        }
        if user_ns {
            // A user namespace may not mknod; bind the host's node instead.
            create_target(&target, false)?;
            sys.mount(Some(&path), &target, None, MsFlags::MS_BIND, None)
                .map_err(|e| RootfsError::Device(target.clone(), e))?;
        } else {
            sys.mknod(&target, kind, mode, nix::sys::stat::makedev(major, minor))
                .map_err(|e| RootfsError::Device(target.clone(), e))?;
            // mknod honours the umask; set the mode the spec asked for.
            let _ = nix::sys::stat::fchmodat(
                None,
                &target,
                nix::sys::stat::Mode::from_bits_truncate(mode),
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            );
            if let Some((uid, gid)) = owner {
                let _ = nix::unistd::chown(&target, Some(uid.into()), Some(gid.into()));
            }
        }
    }
    if dev_is_tmpfs {
        let links = [
            ("/proc/self/fd", "fd"),
            ("/proc/self/fd/0", "stdin"),
            ("/proc/self/fd/1", "stdout"),
            ("/proc/self/fd/2", "stderr"),
            ("/proc/kcore", "core"),
        ];
        for (target, name) in links {
            let link = dev.join(name);
            if fs::symlink_metadata(&link).is_err() {
                sys.symlink(Path::new(target), &link)
                    .map_err(|e| RootfsError::Device(link.clone(), e))?;
            }
        }
        if dev.join("pts/ptmx").exists()
            || spec
                .mounts()
                .iter()
                .flatten()
                .any(|m| m.destination() == Path::new("/dev/pts"))
        {
            let ptmx = dev.join("ptmx");
            let _ = fs::remove_file(&ptmx);
            sys.symlink(Path::new("pts/ptmx"), &ptmx)
                .map_err(|e| RootfsError::Device(ptmx.clone(), e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscall::{Call, RecordingSyscall};

    #[test]
    fn secure_join_never_leaves_the_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        fs::create_dir_all(root.join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", root.join("etc/rel")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        assert_eq!(
            secure_join(root, Path::new("/../../etc/passwd")).unwrap(),
            root.join("etc/passwd")
        );
        assert_eq!(
            secure_join(root, Path::new("/abs/x")).unwrap(),
            root.join("etc/x")
        );
        assert_eq!(
            secure_join(root, Path::new("/etc/rel/y")).unwrap(),
            root.join("etc/y")
        );
        assert!(secure_join(root, Path::new("/loop")).is_err());
    }

    #[test]
    fn pivot_sequence_detaches_the_old_root_after_making_it_slave() {
        let d = tempfile::tempdir().unwrap();
        let spec: Spec = serde_json::from_str(
            r#"{"ociVersion":"1.2.0","root":{"path":"rootfs","readonly":true},
            "mounts":[{"destination":"/proc","type":"proc","source":"proc","options":["nosuid"]}],
            "linux":{"rootfsPropagation":"rprivate"}}"#,
        )
        .unwrap();
        let sys = RecordingSyscall::default();
        prepare(
            &spec,
            d.path(),
            &RootfsOptions {
                user_namespace: false,
                no_pivot: false,
                host_cgroup2: None,
                idmaps: Default::default(),
                overlay: None,
            },
            &sys,
        )
        .unwrap();
        let calls = sys.calls.borrow();
        assert_eq!(
            calls[0],
            Call::Mount(
                None,
                "/".into(),
                None,
                MsFlags::MS_SLAVE | MsFlags::MS_REC,
                None
            )
        );
        assert!(
            matches!(&calls[1], Call::Mount(None, _, None, f, None) if *f == MsFlags::MS_PRIVATE)
        );
        assert!(
            matches!(&calls[3], Call::Mount(_, dest, Some(t), f, None) if dest == &d.path().join("proc") && t == "proc" && *f == MsFlags::MS_NOSUID)
        );
        let pivot = calls
            .iter()
            .position(|c| matches!(c, Call::PivotRoot(..)))
            .unwrap();
        assert_eq!(
            calls[pivot + 1],
            Call::Mount(
                None,
                ".".into(),
                None,
                MsFlags::MS_SLAVE | MsFlags::MS_REC,
                None
            )
        );
        assert_eq!(
            calls[pivot + 2],
            Call::Umount(".".into(), MntFlags::MNT_DETACH)
        );
        // The configured propagation lands on the new root, after the pivot.
        assert_eq!(
            calls[pivot + 4],
            Call::Mount(
                None,
                "/".into(),
                None,
                MsFlags::MS_PRIVATE | MsFlags::MS_REC,
                None
            )
        );
        assert!(
            matches!(calls.last().unwrap(), Call::Mount(None, p, None, f, None) if p == Path::new("/") && f.contains(MsFlags::MS_RDONLY))
        );
    }
}
