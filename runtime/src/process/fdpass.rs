//! Passing file descriptors over unix sockets (`SCM_RIGHTS`): the console master to
//! `--console-socket`, the seccomp notify fd to `listenerPath`.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

/// Sends `data` with `fds` attached, in one message.
pub fn send_with_fds(sock: &UnixStream, data: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    let iov = [IoSlice::new(data)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
        .map_err(std::io::Error::from)?;
    Ok(())
}

/// Receives one message (up to 64 KiB) and the first fd attached to it, if any.
pub fn recv_with_fd(sock: &UnixStream) -> std::io::Result<(Vec<u8>, Option<OwnedFd>)> {
    let mut buf = vec![0u8; 65536];
    let mut cmsg_space = nix::cmsg_space!([RawFd; 4]);
    let (len, fds) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg_space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(std::io::Error::from)?;
        let mut fds = Vec::new();
        for c in msg.cmsgs().map_err(std::io::Error::from)? {
            if let ControlMessageOwned::ScmRights(received) = c {
                fds.extend(received);
            }
        }
        (msg.bytes, fds)
    };
    buf.truncate(len);
    let mut owned: Vec<OwnedFd> = fds
        .into_iter()
        // SAFETY: the kernel just installed these fds in this process; nothing else owns them.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    let first = if owned.is_empty() {
        None
    } else {
        Some(owned.remove(0))
    };
    Ok((buf, first))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn an_fd_crosses_the_socket_and_still_works() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut r, w) = UnixStream::pair().unwrap();
        send_with_fds(&a, b"hello", &[w.as_raw_fd()]).unwrap();
        drop(w);
        let (data, fd) = recv_with_fd(&b).unwrap();
        assert_eq!(data, b"hello");
        let mut w2 = UnixStream::from(fd.expect("fd attached"));
        w2.write_all(b"x").unwrap();
        drop(w2);
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"x");
    }
}
