//! Publishing container ports without iptables (`-p [IP:]HOSTPORT:PORT[/udp]`): a userspace
//! proxy in the process that owns the container (`podlet run` or its monitor). Host sockets
//! are bound in the caller's network namespace before the container starts; each connection
//! (or UDP client) gets a socket made inside the container's network namespace — by a thread
//! that has `setns`'d into it, which affects that thread only — connected to the container's
//! loopback.

use std::collections::HashMap;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sched::CloneFlags;

/// A bad `-p` value or a port that cannot be bound.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// The mapping does not parse.
    #[error("--publish {0:?}: expected [IP:]HOSTPORT:PORT[/tcp|/udp]")]
    Syntax(String),
    /// Binding the host side failed (in use, no permission).
    #[error("--publish {spec}: cannot bind {addr}: {source}")]
    Bind {
        /// The mapping as given.
        spec: String,
        /// The host address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Transport protocol of a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// One published port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    /// Host address to listen on (0.0.0.0 when not given).
    pub host: SocketAddr,
    /// The port inside the container.
    pub container_port: u16,
    /// TCP or UDP.
    pub proto: Proto,
    /// The mapping as written.
    pub spec: String,
}

impl PortMapping {
    /// Parses `[IP:]HOSTPORT:PORT[/tcp|/udp]`.
    pub fn parse(spec: &str) -> Result<PortMapping, PortError> {
        let bad = || PortError::Syntax(spec.to_string());
        let (body, proto) = match spec.rsplit_once('/') {
            Some((b, "tcp")) => (b, Proto::Tcp),
            Some((b, "udp")) => (b, Proto::Udp),
            Some(_) => return Err(bad()),
            None => (spec, Proto::Tcp),
        };
        let parts: Vec<&str> = body.rsplitn(3, ':').collect();
        let (ip, host_port, port) = match parts.as_slice() {
            [port, host_port] => (IpAddr::V4(Ipv4Addr::UNSPECIFIED), *host_port, *port),
            [port, host_port, ip] => (
                ip.trim_matches(['[', ']']).parse().map_err(|_| bad())?,
                *host_port,
                *port,
            ),
            _ => return Err(bad()),
        };
        let host_port: u16 = host_port.parse().map_err(|_| bad())?;
        let container_port: u16 = port.parse().map_err(|_| bad())?;
        if container_port == 0 {
            return Err(bad());
        }
        Ok(PortMapping {
            host: SocketAddr::new(ip, host_port),
            container_port,
            proto,
            spec: spec.to_string(),
        })
    }
}

/// Host sockets bound for a container, not yet forwarding.
pub struct BoundPorts(Vec<(PortMapping, Socket)>);

enum Socket {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

/// Binds the host side of every mapping (before the container starts, so a busy port fails
/// the run early).
pub fn bind(mappings: &[PortMapping]) -> Result<BoundPorts, PortError> {
    let mut out = Vec::new();
    for m in mappings {
        let err = |source| PortError::Bind {
            spec: m.spec.clone(),
            addr: m.host,
            source,
        };
        let s = match m.proto {
            Proto::Tcp => Socket::Tcp(TcpListener::bind(m.host).map_err(err)?),
            Proto::Udp => Socket::Udp(UdpSocket::bind(m.host).map_err(err)?),
        };
        out.push((m.clone(), s));
    }
    Ok(BoundPorts(out))
}

/// Moves the calling thread into the network namespace at `netns`.
fn enter(netns: &Path) -> std::io::Result<()> {
    let f = File::open(netns)?;
    nix::sched::setns(f, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
}

fn pipe_both(a: TcpStream, b: TcpStream) {
    let (Ok(mut a2), Ok(mut b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let t = std::thread::spawn(move || {
        let mut a = a;
        let mut b = b;
        let _ = std::io::copy(&mut a, &mut b);
        let _ = b.shutdown(Shutdown::Write);
    });
    let _ = std::io::copy(&mut b2, &mut a2);
    let _ = a2.shutdown(Shutdown::Write);
    let _ = t.join();
}

impl BoundPorts {
    /// The host addresses actually bound (a host port of 0 gets one from the kernel).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.0
            .iter()
            .filter_map(|(_, s)| match s {
                Socket::Tcp(l) => l.local_addr().ok(),
                Socket::Udp(u) => u.local_addr().ok(),
            })
            .collect()
    }

    /// Starts forwarding into the network namespace `netns` (e.g. `/proc/<pid>/ns/net`).
    /// The proxy threads run for the life of the process.
    pub fn forward(self, netns: PathBuf) {
        for (m, sock) in self.0 {
            let netns = netns.clone();
            let target = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), m.container_port);
            match sock {
                Socket::Tcp(listener) => {
                    std::thread::spawn(move || {
                        for conn in listener.incoming().flatten() {
                            let netns = netns.clone();
                            std::thread::spawn(move || {
                                if enter(&netns).is_err() {
                                    return;
                                }
                                if let Ok(inside) =
                                    TcpStream::connect_timeout(&target, Duration::from_secs(5))
                                {
                                    pipe_both(conn, inside);
                                }
                            });
                        }
                    });
                }
                Socket::Udp(outside) => udp_relay(outside, netns, target),
            }
        }
    }
}

/// Relays datagrams: one socket in the container per host-side client, replies sent back.
fn udp_relay(outside: UdpSocket, netns: PathBuf, target: SocketAddr) {
    let outside = Arc::new(outside);
    let clients: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = outside.recv_from(&mut buf) {
            let existing = clients.lock().ok().and_then(|c| c.get(&from).cloned());
            let inside = match existing {
                Some(s) => s,
                None => {
                    // A socket made inside the container's namespace, by a thread there.
                    let ns = netns.clone();
                    let made = std::thread::spawn(move || -> std::io::Result<UdpSocket> {
                        enter(&ns)?;
                        let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
                        s.connect(target)?;
                        Ok(s)
                    })
                    .join();
                    let Ok(Ok(s)) = made else { continue };
                    let s = Arc::new(s);
                    if let Ok(mut c) = clients.lock() {
                        c.insert(from, s.clone());
                    }
                    let (back, out) = (s.clone(), outside.clone());
                    std::thread::spawn(move || {
                        let mut b = vec![0u8; 65536];
                        while let Ok(n) = back.recv(&mut b) {
                            let _ = out.send_to(&b[..n], from);
                        }
                    });
                    s
                }
            };
            let _ = inside.send(&buf[..n]);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_parse() {
        let m = PortMapping::parse("8080:80").unwrap();
        assert_eq!(m.host, "0.0.0.0:8080".parse().unwrap());
        assert_eq!((m.container_port, m.proto), (80, Proto::Tcp));
        let m = PortMapping::parse("127.0.0.1:5353:53/udp").unwrap();
        assert_eq!(m.host, "127.0.0.1:5353".parse().unwrap());
        assert_eq!(m.proto, Proto::Udp);
        let m = PortMapping::parse("[::1]:9000:90").unwrap();
        assert_eq!(m.host, "[::1]:9000".parse().unwrap());
        for bad in [
            "80",
            "a:80",
            "80:b",
            "1:2/sctp",
            "1.2.3:4:5",
            "70000:80",
            "8080:0",
        ] {
            assert!(PortMapping::parse(bad).is_err(), "{bad}");
        }
    }
}
