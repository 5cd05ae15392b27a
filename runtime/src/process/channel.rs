//! A typed message channel between the runtime and the container's init: a `SOCK_SEQPACKET`
//! pair, one JSON message per packet, optionally carrying a file descriptor.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use serde::{Deserialize, Serialize};

use super::fdpass;

/// Messages on the sync channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Parent → init: maps written and cgroups joined; go on.
    Continue,
    /// Init → parent: mounts are prepared, pivot_root is next; run the prestart and
    /// createRuntime hooks now.
    HooksBeforePivot,
    /// Parent → init: those hooks ran; here is the state document for createContainer hooks.
    HooksDone(String),
    /// Init → parent: the pty master is attached; forward it to `--console-socket`.
    Console,
    /// Init → parent: a seccomp notify fd is attached; forward it to `listenerPath`.
    SeccompFd,
    /// Init → parent: the container is built and waits for `start`.
    Ready,
    /// Init → parent: setup failed at this step.
    Error(String),
}

/// One end of the channel.
#[derive(Debug)]
pub struct Channel {
    sock: UnixStream,
}

impl std::os::fd::AsRawFd for Channel {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.sock.as_raw_fd()
    }
}

impl Channel {
    /// A connected pair (both ends close on exec).
    pub fn pair() -> std::io::Result<(Channel, Channel)> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        Ok((
            Channel {
                sock: UnixStream::from(a),
            },
            Channel {
                sock: UnixStream::from(b),
            },
        ))
    }

    /// Sends one message.
    pub fn send(&mut self, m: &Message) -> std::io::Result<()> {
        self.send_with_fd(m, None)
    }

    /// Sends one message with `fd` attached.
    pub fn send_with_fd(&mut self, m: &Message, fd: Option<&OwnedFd>) -> std::io::Result<()> {
        let data = serde_json::to_vec(m).map_err(std::io::Error::other)?;
        match fd {
            Some(fd) => fdpass::send_with_fds(&self.sock, &data, &[fd.as_raw_fd()]),
            None => {
                use std::io::Write;
                (&self.sock).write_all(&data)
            }
        }
    }

    /// Receives one message; `None` if the other end closed.
    pub fn recv(&mut self) -> std::io::Result<Option<Message>> {
        Ok(self.recv_with_fd()?.map(|(m, _)| m))
    }

    /// Receives one message and the fd attached to it, if any.
    pub fn recv_with_fd(&mut self) -> std::io::Result<Option<(Message, Option<OwnedFd>)>> {
        let (data, fd) = fdpass::recv_with_fd(&self.sock)?;
        if data.is_empty() {
            return Ok(None);
        }
        let m = serde_json::from_slice(&data).map_err(std::io::Error::other)?;
        Ok(Some((m, fd)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_keep_their_boundaries_and_eof_is_none() {
        let (mut a, mut b) = Channel::pair().unwrap();
        a.send(&Message::Continue).unwrap();
        a.send(&Message::Error("x y".into())).unwrap();
        assert_eq!(b.recv().unwrap(), Some(Message::Continue));
        assert_eq!(b.recv().unwrap(), Some(Message::Error("x y".into())));
        drop(a);
        assert_eq!(b.recv().unwrap(), None);
    }
}
