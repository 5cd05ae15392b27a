//! A typed message channel between the runtime and the container's init (a socketpair).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

use serde::{Deserialize, Serialize};

/// Messages on the sync channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Parent → init: maps written and cgroups joined; go on.
    Continue,
    /// Init → parent: the container is built and waits for `start`.
    Ready,
    /// Init → parent: setup failed at this step.
    Error(String),
}

/// One end of the channel.
#[derive(Debug)]
pub struct Channel {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Channel {
    /// A connected pair (both ends close on exec).
    pub fn pair() -> std::io::Result<(Channel, Channel)> {
        let (a, b) = UnixStream::pair()?;
        Ok((Channel::new(a)?, Channel::new(b)?))
    }

    fn new(s: UnixStream) -> std::io::Result<Channel> {
        Ok(Channel {
            writer: s.try_clone()?,
            reader: BufReader::new(s),
        })
    }

    /// Sends one message.
    pub fn send(&mut self, m: &Message) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(m).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.writer.write_all(&line)
    }

    /// Receives one message; `None` if the other end closed.
    pub fn recv(&mut self) -> std::io::Result<Option<Message>> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        serde_json::from_str(&line)
            .map(Some)
            .map_err(std::io::Error::other)
    }
}
