//! The UDP side of the proxy: a socket per UDP frontend, bound on the ClusterIP itself (every
//! Service address is local to the node) or on every address for a NodePort, so replies leave
//! from the address and port the client sent to. Each client address is a flow with its own
//! connected socket to the backend Maglev picked; a flow idle for [`FLOW_IDLE`] is forgotten.

use std::collections::HashMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
            match std::net::UdpSocket::bind(addr)
                .and_then(|s| s.set_nonblocking(true).map(|()| s))
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
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok((n, SocketAddr::V4(p))) => (n, p),
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
                    peer,
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
    client: SocketAddrV4,
    flows: Flows,
    service: String,
    state: Arc<ProxyState>,
) {
    let mut buf = vec![0u8; 65_536];
    while let Ok(Ok(n)) = tokio::time::timeout(FLOW_IDLE, up.recv(&mut buf)).await {
        let _ = front.send_to(&buf[..n], client).await;
    }
    if let Ok(mut f) = flows.lock() {
        f.remove(&client);
    }
    state.counters.closed(&service);
}
