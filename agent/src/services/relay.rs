//! Moving bytes between a client and its backend. Each direction starts by copying through a
//! small buffer (one `read` and one `write` per message: cheapest for request/response
//! traffic) and switches to `splice(2)` through a pipe, so payload never enters user space,
//! once a read fills the buffer (a bulk transfer). Half-closes are passed on (a FIN one way
//! shuts down writing the other way) and the relay ends when both directions are done or one
//! fails.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use tokio::io::Interest;
use tokio::net::TcpStream;

/// How much one `splice` moves at most (the default pipe capacity).
const CHUNK: usize = 64 * 1024;
/// The copy buffer; a read that fills it switches the direction to `splice`.
const COPY_BUF: usize = 16 * 1024;

/// A pipe for one direction.
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(std::io::Error::from)
}

fn splice(from: &impl AsFd, to: &impl AsFd, len: usize) -> std::io::Result<usize> {
    nix::fcntl::splice(
        from.as_fd(),
        None,
        to.as_fd(),
        None,
        len,
        nix::fcntl::SpliceFFlags::SPLICE_F_MOVE | nix::fcntl::SpliceFFlags::SPLICE_F_NONBLOCK,
    )
    .map_err(std::io::Error::from)
}

/// Writes all of `buf` to `to`.
async fn write_all(to: &TcpStream, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        to.writable().await?;
        match to.try_write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Copies `from` to `to` until end of stream, then shuts down writing on `to`.
async fn one_way(from: &TcpStream, to: &TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        from.readable().await?;
        let n = match from.try_read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            shutdown_write(to);
            return Ok(());
        }
        write_all(to, &buf[..n]).await?;
        if n == buf.len() {
            break;
        }
    }
    drop(buf);
    spliced(from, to).await
}

/// The bulk phase of [`one_way`]: `splice` through a pipe until end of stream.
async fn spliced(from: &TcpStream, to: &TcpStream) -> std::io::Result<()> {
    let (rd, wr) = pipe()?;
    loop {
        // Fill the pipe from the source socket.
        let n = loop {
            from.readable().await?;
            match from.try_io(Interest::READABLE, || splice(from, &wr, CHUNK)) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            shutdown_write(to);
            return Ok(());
        }
        // Drain exactly what went in to the destination socket.
        let mut left = n;
        while left > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || splice(&rd, to, left)) {
                Ok(m) => left -= m,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

fn shutdown_write(s: &TcpStream) {
    // SAFETY: shutdown(2) on a socket fd the stream owns; it changes no memory.
    unsafe { libc::shutdown(s.as_raw_fd(), libc::SHUT_WR) };
}

/// Relays both ways until both directions have ended (or one fails, which ends both).
pub async fn bidirectional(a: TcpStream, b: TcpStream) {
    let up = one_way(&a, &b);
    let down = one_way(&b, &a);
    tokio::pin!(up, down);
    let (mut up_done, mut down_done) = (false, false);
    while !(up_done && down_done) {
        tokio::select! {
            r = &mut up, if !up_done => { up_done = true; if r.is_err() { break } }
            r = &mut down, if !down_done => { down_done = true; if r.is_err() { break } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_and_half_closes_cross_the_relay() {
        // client ⇄ [a | relay | b] ⇄ server, all on loopback.
        let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let back = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (fa, ba) = (front.local_addr().unwrap(), back.local_addr().unwrap());
        let relay = tokio::spawn(async move {
            let (a, _) = front.accept().await.unwrap();
            let b = TcpStream::connect(ba).await.unwrap();
            bidirectional(a, b).await;
        });
        let server = tokio::spawn(async move {
            let (mut s, _) = back.accept().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            s.write_all(&got.iter().rev().copied().collect::<Vec<u8>>())
                .await
                .unwrap();
            got.len()
        });
        let mut c = TcpStream::connect(fa).await.unwrap();
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        c.write_all(&payload).await.unwrap();
        c.shutdown().await.unwrap();
        let mut back_again = Vec::new();
        c.read_to_end(&mut back_again).await.unwrap();
        assert_eq!(server.await.unwrap(), payload.len());
        assert_eq!(
            back_again,
            payload.iter().rev().copied().collect::<Vec<u8>>()
        );
        relay.await.unwrap();
    }
}
