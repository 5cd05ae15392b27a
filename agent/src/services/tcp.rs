//! The TCP side of the proxy: one listener takes every steered connection; the accepted
//! socket's local address is the frontend the client dialled. A backend is picked by Maglev
//! (or the client's affinity), one that refuses is passed over for that flow, and bytes are
//! relayed until both sides close.

use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use super::model::Protocol;
use super::ProxyState;

/// How long a backend may take to accept before the next one is tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// At most this many backends are tried for one connection.
pub const MAX_ATTEMPTS: usize = 3;

/// Accepts steered connections forever.
pub async fn serve(listener: TcpListener, state: Arc<ProxyState>) {
    loop {
        match listener.accept().await {
            Ok((conn, SocketAddr::V4(peer))) => {
                tokio::spawn(handle(conn, peer, state.clone()));
            }
            Ok(_) => {}
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "service proxy: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Closes with a reset, as a refused connection would look to the client.
fn refuse(conn: TcpStream) {
    let _ = conn.set_zero_linger();
    drop(conn);
}

async fn handle(client: TcpStream, peer: SocketAddrV4, state: Arc<ProxyState>) {
    let Ok(SocketAddr::V4(dst)) = client.local_addr() else {
        return refuse(client);
    };
    let Some(fe) = state.table.load().lookup(dst, Protocol::Tcp).cloned() else {
        return refuse(client);
    };
    let mut avoid = Vec::new();
    let backend = loop {
        let Some(b) = state.pick(&fe, peer, &avoid) else {
            state.counters.failed(&fe.service);
            return refuse(client);
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(b)).await {
            Ok(Ok(s)) => break s,
            Ok(Err(e)) => {
                tracing::debug!(service = %fe.service, backend = %b, error = %e, "backend refused")
            }
            Err(_) => {
                tracing::debug!(service = %fe.service, backend = %b, "backend connect timed out")
            }
        }
        avoid.push(b);
        state.forget_affinity(&fe, peer);
        if avoid.len() >= MAX_ATTEMPTS {
            state.counters.failed(&fe.service);
            return refuse(client);
        }
    };
    let _ = client.set_nodelay(true);
    let _ = backend.set_nodelay(true);
    state.counters.opened(&fe.service);
    super::relay::bidirectional(client, backend).await;
    state.counters.closed(&fe.service);
}
