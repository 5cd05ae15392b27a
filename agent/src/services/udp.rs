//! The UDP side of the proxy: a socket per UDP frontend, bound on the ClusterIP itself (every
//! Service address is local to the node) or on every address for a NodePort — there with
//! `IP_PKTINFO`, each reply sent from the address its client's datagram was sent to — so
//! replies leave from the address and port the client sent to. Each client address is a flow with its own
//! connected socket to the backend Maglev picked; a flow idle for [`FLOW_IDLE`] is forgotten.

use std::collections::HashMap;
use std::io::{IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
    SockaddrIn,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use super::model::{FrontendKey, Protocol, ProxyTable};
use super::ProxyState;

/// A flow without traffic from its backend for this long is dropped.
pub const FLOW_IDLE: Duration = Duration::from_secs(30);

/// The running UDP frontends.
#[derive(Debug, Default)]
pub struct UdpFrontends {
    tasks: HashMap<FrontendKey, JoinHandle<()>>,
}

impl UdpFrontends {
    /// Serves exactly the UDP frontends of `table`: new ones get a socket, gone ones stop.
    pub fn sync(&mut self, table: &ProxyTable, state: &Arc<ProxyState>) {
        let want: Vec<FrontendKey> = table
            .frontends()
            .map(|f| f.key)
            .filter(|k| k.protocol == Protocol::Udp)
            .collect();
        self.tasks.retain(|k, t| {
            let keep = want.contains(k);
            if !keep {
                t.abort();
            }
            keep
        });
        for key in want {
            if self.tasks.contains_key(&key) {
                continue;
            }
            let addr = SocketAddrV4::new(key.ip, key.port);
            let wildcard = key.ip.is_unspecified();
            match std::net::UdpSocket::bind(addr)
                .and_then(|s| s.set_nonblocking(true).map(|()| s))
                .and_then(|s| {
                    if wildcard {
                        setsockopt(&s, sockopt::Ipv4PacketInfo, &true)?;
                    }
                    Ok(s)
                })
                .and_then(UdpSocket::from_std)
            {
                Ok(sock) => {
                    self.tasks
                        .insert(key, tokio::spawn(serve(Arc::new(sock), key, state.clone())));
                }
                Err(e) => tracing::warn!(frontend = %addr, error = %e, "UDP frontend: cannot bind"),
            }
        }
    }
}

impl Drop for UdpFrontends {
    fn drop(&mut self) {
        for t in self.tasks.values() {
            t.abort();
        }
    }
}

type Flows = Arc<Mutex<HashMap<SocketAddrV4, Arc<UdpSocket>>>>;

async fn serve(sock: Arc<UdpSocket>, key: FrontendKey, state: Arc<ProxyState>) {
    let flows: Flows = Arc::default();
    let mut buf = vec![0u8; 65_536];
    let dst = SocketAddrV4::new(key.ip, key.port);
    let wildcard = key.ip.is_unspecified();
    loop {
        let received = if wildcard {
            recv_with_destination(&sock, &mut buf).await
        } else {
            sock.recv_from(&mut buf).await.map(|(n, p)| (n, p, key.ip))
        };
        let (n, peer, local) = match received {
            Ok((n, SocketAddr::V4(p), local)) => (n, p, local),
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(frontend = %dst, error = %e, "UDP frontend: receive failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let existing = flows.lock().ok().and_then(|f| f.get(&peer).cloned());
        let up = match existing {
            Some(u) => u,
            None => {
                let Some(fe) = state.table.load().lookup(dst, Protocol::Udp).cloned() else {
                    continue;
                };
                let Some(backend) = state.pick(&fe, peer, &[]) else {
                    state.counters.failed(&fe.service);
                    continue;
                };
                let up = match UdpSocket::bind("0.0.0.0:0").await {
                    Ok(u) if u.connect(backend).await.is_ok() => Arc::new(u),
                    _ => continue,
                };
                if let Ok(mut f) = flows.lock() {
                    f.insert(peer, up.clone());
                }
                state.counters.opened(&fe.service);
                tokio::spawn(replies(
                    up.clone(),
                    sock.clone(),
                    (peer, local, wildcard),
                    flows.clone(),
                    fe.service.clone(),
                    state.clone(),
                ));
                up
            }
        };
        let _ = up.send(&buf[..n]).await;
    }
}

/// Sends a flow's replies back to its client until the flow goes idle.
async fn replies(
    up: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    (client, local, wildcard): (SocketAddrV4, Ipv4Addr, bool),
    flows: Flows,
    service: String,
    state: Arc<ProxyState>,
) {
    let mut buf = vec![0u8; 65_536];
    while let Ok(Ok(n)) = tokio::time::timeout(FLOW_IDLE, up.recv(&mut buf)).await {
        let _ = if wildcard {
            send_from(&front, &buf[..n], client, local).await
        } else {
            front.send_to(&buf[..n], client).await.map(drop)
        };
    }
    if let Ok(mut f) = flows.lock() {
        f.remove(&client);
    }
    state.counters.closed(&service);
}

/// Receives one datagram and the local address it was sent to (`IP_PKTINFO`).
async fn recv_with_destination(
    sock: &UdpSocket,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr, Ipv4Addr)> {
    sock.async_io(Interest::READABLE, || {
        let mut iov = [IoSliceMut::new(buf)];
        let mut cmsg = nix::cmsg_space!(libc::in_pktinfo);
        let msg = recvmsg::<SockaddrIn>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_DONTWAIT,
        )
        .map_err(std::io::Error::from)?;
        let local = msg
            .cmsgs()
            .map_err(std::io::Error::from)?
            .find_map(|c| match c {
                ControlMessageOwned::Ipv4PacketInfo(i) => {
                    Some(Ipv4Addr::from(u32::from_be(i.ipi_addr.s_addr)))
                }
                _ => None,
            })
            .unwrap_or(Ipv4Addr::UNSPECIFIED);
        let peer = msg
            .address
            .map(|a| SocketAddr::V4(SocketAddrV4::new(a.ip(), a.port())))
            .ok_or_else(|| std::io::Error::other("datagram without a source address"))?;
        Ok((msg.bytes, peer, local))
    })
    .await
}

/// Sends `data` to `to` from the local address `from` (`IP_PKTINFO`'s `ipi_spec_dst`).
async fn send_from(
    sock: &UdpSocket,
    data: &[u8],
    to: SocketAddrV4,
    from: Ipv4Addr,
) -> std::io::Result<()> {
    let info = libc::in_pktinfo {
        ipi_ifindex: 0,
        ipi_spec_dst: libc::in_addr {
            s_addr: u32::from(from).to_be(),
        },
        ipi_addr: libc::in_addr { s_addr: 0 },
    };
    let dest = SockaddrIn::from(to);
    sock.async_io(Interest::WRITABLE, || {
        let iov = [IoSlice::new(data)];
        let cmsgs = [ControlMessage::Ipv4PacketInfo(&info)];
        sendmsg(
            sock.as_raw_fd(),
            &iov,
            &cmsgs,
            MsgFlags::MSG_DONTWAIT,
            Some(&dest),
        )
        .map(drop)
        .map_err(std::io::Error::from)
    })
    .await
}
