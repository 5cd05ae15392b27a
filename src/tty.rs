//! `podlet run -t`: the container's pty master, received over the console socket, proxied to
//! this terminal — raw mode while it runs, window size copied at start and on SIGWINCH.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::sys::termios::{self, SetArg, Termios};

/// Puts a terminal in raw mode; restores it on drop.
pub struct RawMode {
    fd: RawFd,
    saved: Termios,
}

impl RawMode {
    /// Raw mode on `fd` if it is a terminal.
    pub fn enable(fd: BorrowedFd<'_>) -> Option<RawMode> {
        let saved = termios::tcgetattr(fd).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd, SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode {
            fd: fd.as_raw_fd(),
            saved,
        })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: the fd (stdin) outlives this guard; it is only borrowed for the call.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        let _ = termios::tcsetattr(fd, SetArg::TCSANOW, &self.saved);
    }
}

/// Copies the window size of terminal `from` to pty `to`.
pub fn copy_size(from: RawFd, to: RawFd) {
    let mut ws: libc::winsize = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ/TIOCSWINSZ read and write a live winsize struct.
    unsafe {
        if libc::ioctl(from, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(to, libc::TIOCSWINSZ, &ws);
        }
    }
}

/// Starts copying the pty's output to stdout (until the container side closes) and, with
/// `input`, stdin to the pty. Returns the output thread to join.
pub fn proxy(master: &OwnedFd, input: bool) -> std::io::Result<std::thread::JoinHandle<()>> {
    let mut out_side = std::fs::File::from(master.as_fd().try_clone_to_owned()?);
    if input {
        let mut in_side = std::fs::File::from(master.as_fd().try_clone_to_owned()?);
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 || in_side.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
    Ok(std::thread::spawn(move || {
        let mut stdout = std::io::stdout().lock();
        let mut buf = [0u8; 4096];
        // EIO once the last slave fd in the container is closed.
        while let Ok(n) = out_side.read(&mut buf) {
            if n == 0 || stdout.write_all(&buf[..n]).is_err() {
                break;
            }
            let _ = stdout.flush();
        }
    }))
}

/// A container terminal attached to this one: the pty master received on the console
/// socket, raw mode (with input), the output copier.
pub struct Session {
    master: OwnedFd,
    output: std::thread::JoinHandle<()>,
    _raw: Option<RawMode>,
}

impl Session {
    /// Accepts the runtime's connection on `listener`, takes the pty master it sends, copies
    /// this terminal's size to it and starts proxying (stdin too with `interactive`).
    pub fn accept(
        listener: &std::os::unix::net::UnixListener,
        interactive: bool,
    ) -> std::io::Result<Session> {
        let (conn, _) = listener.accept()?;
        let (_, fd) = podlet_runtime::process::fdpass::recv_with_fd(&conn)?;
        let master = fd.ok_or_else(|| std::io::Error::other("the runtime sent no terminal"))?;
        copy_size(1, master.as_raw_fd());
        let raw = if interactive {
            RawMode::enable(std::io::stdin().as_fd())
        } else {
            None
        };
        let output = proxy(&master, interactive)?;
        Ok(Session {
            master,
            output,
            _raw: raw,
        })
    }

    /// The master's fd (for resizing on SIGWINCH).
    pub fn master_fd(&self) -> RawFd {
        self.master.as_raw_fd()
    }

    /// Lets the output drain (the pty reports EIO once the container side is gone, allow two
    /// seconds), then restores the terminal.
    pub fn finish(self) {
        drop(self.master);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while !self.output.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
