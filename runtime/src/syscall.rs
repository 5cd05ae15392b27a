//! The thin layer between runtime logic and the kernel.
//!
//! Rootfs setup calls the kernel only through [`Syscall`], so its ordering and flags can be
//! unit-tested with [`RecordingSyscall`]; [`LinuxSyscall`] does the real calls.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

/// Kernel calls used while building a container's root filesystem.
pub trait Syscall {
    /// mount(2).
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()>;
    /// umount2(2).
    fn umount2(&self, target: &Path, flags: MntFlags) -> nix::Result<()>;
    /// pivot_root(2).
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> nix::Result<()>;
    /// chdir(2).
    fn chdir(&self, path: &Path) -> nix::Result<()>;
    /// symlink(2).
    fn symlink(&self, target: &Path, link: &Path) -> nix::Result<()>;
    /// mknod(2) of a character or block device.
    fn mknod(
        &self,
        path: &Path,
        kind: nix::sys::stat::SFlag,
        mode: u32,
        dev: u64,
    ) -> nix::Result<()>;
    /// An idmapped bind mount (open_tree + mount_setattr + move_mount).
    fn idmapped_bind(
        &self,
        source: &Path,
        target: &Path,
        userns: std::os::fd::RawFd,
        recursive: bool,
    ) -> nix::Result<()>;
    /// mount_setattr(2) on the mount at `target` and every mount below it.
    fn set_mount_attr_recursive(&self, target: &Path, set: u64, clr: u64) -> nix::Result<()>;
    /// The per-mount flags of the mount at `target` that a remount must keep when they are
    /// locked (nosuid, nodev, noexec, the atime mode, nosymfollow), from statvfs(3).
    fn lockable_flags(&self, target: &Path) -> nix::Result<MsFlags>;
}

/// The real kernel.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxSyscall;

impl Syscall for LinuxSyscall {
    fn set_mount_attr_recursive(&self, target: &Path, set: u64, clr: u64) -> nix::Result<()> {
        crate::idmap::set_mount_attr(target, set, clr, true)
    }
    fn lockable_flags(&self, target: &Path) -> nix::Result<MsFlags> {
        use nix::sys::statvfs::FsFlags;
        let f = nix::sys::statvfs::statvfs(target)?.flags();
        let mut out = MsFlags::empty();
        for (st, ms) in [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if f.contains(st) {
                out |= ms;
            }
        }
        // ST_NOSYMFOLLOW (0x2000), which nix does not name.
        if f.bits() & 0x2000 != 0 {
            out |= crate::mount_options::MS_NOSYMFOLLOW;
        }
        Ok(out)
    }
    fn idmapped_bind(
        &self,
        source: &Path,
        target: &Path,
        userns: std::os::fd::RawFd,
        recursive: bool,
    ) -> nix::Result<()> {
        crate::idmap::idmapped_bind(source, target, userns, recursive)
    }
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()> {
        nix::mount::mount(source, target, fstype, flags, data)
    }
    fn umount2(&self, target: &Path, flags: MntFlags) -> nix::Result<()> {
        nix::mount::umount2(target, flags)
    }
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> nix::Result<()> {
        nix::unistd::pivot_root(new_root, put_old)
    }
    fn chdir(&self, path: &Path) -> nix::Result<()> {
        nix::unistd::chdir(path)
    }
    fn symlink(&self, target: &Path, link: &Path) -> nix::Result<()> {
        std::os::unix::fs::symlink(target, link)
            .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
    }
    fn mknod(
        &self,
        path: &Path,
        kind: nix::sys::stat::SFlag,
        mode: u32,
        dev: u64,
    ) -> nix::Result<()> {
        nix::sys::stat::mknod(
            path,
            kind,
            nix::sys::stat::Mode::from_bits_truncate(mode),
            dev,
        )
    }
}

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// mount(source, target, fstype, flags, data).
    Mount(
        Option<PathBuf>,
        PathBuf,
        Option<String>,
        MsFlags,
        Option<String>,
    ),
    /// umount2(target, flags).
    Umount(PathBuf, MntFlags),
    /// pivot_root(new, old).
    PivotRoot(PathBuf, PathBuf),
    /// chdir(path).
    Chdir(PathBuf),
    /// symlink(target, link).
    Symlink(PathBuf, PathBuf),
    /// mknod(path, mode, dev).
    Mknod(PathBuf, u32, u64),
    /// idmapped_bind(source, target, recursive).
    IdmappedBind(PathBuf, PathBuf, bool),
    /// set_mount_attr_recursive(target, set, clr).
    SetAttrRecursive(PathBuf, u64, u64),
}

/// A test double that records calls instead of making them.
#[derive(Debug, Default)]
pub struct RecordingSyscall {
    /// Every call, in order.
    pub calls: RefCell<Vec<Call>>,
}

impl Syscall for RecordingSyscall {
    fn set_mount_attr_recursive(&self, target: &Path, set: u64, clr: u64) -> nix::Result<()> {
        self.calls
            .borrow_mut()
            .push(Call::SetAttrRecursive(target.to_path_buf(), set, clr));
        Ok(())
    }
    fn lockable_flags(&self, _target: &Path) -> nix::Result<MsFlags> {
        Ok(MsFlags::empty())
    }
    fn idmapped_bind(
        &self,
        source: &Path,
        target: &Path,
        _userns: std::os::fd::RawFd,
        recursive: bool,
    ) -> nix::Result<()> {
        self.calls.borrow_mut().push(Call::IdmappedBind(
            source.to_path_buf(),
            target.to_path_buf(),
            recursive,
        ));
        Ok(())
    }
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()> {
        self.calls.borrow_mut().push(Call::Mount(
            source.map(Path::to_path_buf),
            target.to_path_buf(),
            fstype.map(str::to_string),
            flags,
            data.map(str::to_string),
        ));
        Ok(())
    }
    fn umount2(&self, target: &Path, flags: MntFlags) -> nix::Result<()> {
        self.calls
            .borrow_mut()
            .push(Call::Umount(target.to_path_buf(), flags));
        Ok(())
    }
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> nix::Result<()> {
        self.calls.borrow_mut().push(Call::PivotRoot(
            new_root.to_path_buf(),
            put_old.to_path_buf(),
        ));
        Ok(())
    }
    fn chdir(&self, path: &Path) -> nix::Result<()> {
        self.calls
            .borrow_mut()
            .push(Call::Chdir(path.to_path_buf()));
        Ok(())
    }
    fn symlink(&self, target: &Path, link: &Path) -> nix::Result<()> {
        self.calls
            .borrow_mut()
            .push(Call::Symlink(target.to_path_buf(), link.to_path_buf()));
        Ok(())
    }
    fn mknod(
        &self,
        path: &Path,
        _kind: nix::sys::stat::SFlag,
        mode: u32,
        dev: u64,
    ) -> nix::Result<()> {
        self.calls
            .borrow_mut()
            .push(Call::Mknod(path.to_path_buf(), mode, dev));
        Ok(())
    }
}
