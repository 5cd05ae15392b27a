//! Pseudo-terminals for `process.terminal`: allocated from the container's own devpts and
//! handed to the caller's `--console-socket`.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::fcntl::OFlag;

/// Opens a new pty master through `ptmx` (the container's `/dev/pts/ptmx`) and its slave.
pub fn open_pty(ptmx: &Path) -> std::io::Result<(OwnedFd, OwnedFd)> {
    let fd = nix::fcntl::open(
        ptmx,
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    // SAFETY: open returned a new fd that nothing else owns.
    let master = unsafe { OwnedFd::from_raw_fd(fd) };
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int from a live local.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // TIOCGPTPEER opens the slave relative to the master's own devpts: no path lookup that a
    // container could redirect.
    // SAFETY: TIOCGPTPEER takes open flags by value and returns a new fd.
    let slave = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if slave < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the ioctl returned a new fd that nothing else owns.
    Ok((master, unsafe { OwnedFd::from_raw_fd(slave) }))
}

/// Makes `slave` this process's stdin/stdout/stderr and controlling terminal (after setsid).
pub fn become_terminal(slave: &OwnedFd) -> std::io::Result<()> {
    for target in 0..=2 {
        nix::unistd::dup2(slave.as_raw_fd(), target)?;
    }
    // SAFETY: TIOCSCTTY with argument 0 on a tty fd we own.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The ptmx to allocate from inside a root at `root`: `dev/pts/ptmx` if the container mounted
/// its own devpts there, else `dev/ptmx`.
pub fn ptmx_in(root: &Path) -> std::path::PathBuf {
    let pts = root.join("dev/pts/ptmx");
    if pts.exists() {
        pts
    } else {
        root.join("dev/ptmx")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn master_and_slave_are_connected() {
        let (master, slave) = open_pty(Path::new("/dev/ptmx")).expect("pty");
        let mut s = std::fs::File::from(slave);
        s.write_all(b"ping\n").unwrap();
        let mut m = std::fs::File::from(master);
        let mut buf = [0u8; 16];
        let n = m.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).contains("ping"));
    }
}
