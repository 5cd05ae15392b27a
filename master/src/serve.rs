//! `podlet master`: open the store, make or load the security material, start the watch cache
//! and serve the API over TLS until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::api::auth::Security;
use crate::api::codec::Codec;
use crate::api::server::{router, Inner};
use crate::api::watch_cache::WatchCache;
use crate::store::etcd::EtcdStore;
use crate::store::sqlite::SqliteStore;
use crate::store::Store;

/// Where `podlet master` keeps its state by default.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/podlet/master";

/// How many revisions of history the store keeps for watches and consistent pages.
pub const HISTORY: i64 = 50_000;

/// Master settings.
#[derive(Debug, Clone)]
pub struct MasterConfig {
    /// State directory (SQLite file, certificates, tokens, keys).
    pub data_dir: PathBuf,
    /// Listen address.
    pub listen: SocketAddr,
    /// etcd endpoints (empty: embedded SQLite).
    pub etcd: Vec<String>,
    /// Extra names/addresses for the serving certificate.
    pub tls_san: Vec<String>,
    /// The cluster token that opens the shared identity in etcd (None: this master's own).
    pub token: Option<String>,
}

/// Why the master could not start.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    /// Security material.
    #[error(transparent)]
    Auth(#[from] crate::api::auth::AuthError),
    /// The store.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The shared identity in etcd.
    #[error(transparent)]
    Bootstrap(#[from] crate::bootstrap::BootstrapError),
    /// Binding or serving.
    #[error("{0}")]
    Io(String),
}

/// Creates the namespaces every cluster has.
async fn ensure_namespaces(store: &dyn Store, codec: &Codec) -> Result<(), MasterError> {
    let r = crate::resources::find("", "v1", "namespaces").expect("namespaces");
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let obj = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "uid": crate::api::objects::new_uid(), "creationTimestamp": crate::api::objects::now(),
                         "labels": {"kubernetes.io/metadata.name": ns}},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
        let bytes = codec
            .encode(&obj)
            .map_err(|e| MasterError::Io(e.to_string()))?;
        match store.create(&r.key(None, ns), bytes).await {
            Ok(_) | Err(crate::store::StoreError::AlreadyExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Runs the master until a termination signal; `ready` gets the bound address once serving.
pub async fn serve(
    cfg: MasterConfig,
    ready: impl FnOnce(SocketAddr, &Security),
) -> Result<(), MasterError> {
    let listener = std::net::TcpListener::bind(cfg.listen)
        .map_err(|e| MasterError::Io(format!("listen on {}: {e}", cfg.listen)))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| MasterError::Io(e.to_string()))?;
    let addr = listener
        .local_addr()
        .map_err(|e| MasterError::Io(e.to_string()))?;
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    let url = format!("https://{host}:{}", addr.port());
    let mut sans = cfg.tls_san.clone();
    sans.push(host.clone());
    let store: Arc<dyn Store> = if cfg.etcd.is_empty() {
        std::fs::create_dir_all(&cfg.data_dir)
            .map_err(|e| MasterError::Io(format!("{}: {e}", cfg.data_dir.display())))?;
        Arc::new(SqliteStore::open(&cfg.data_dir.join("state.db"))?)
    } else {
        Arc::new(EtcdStore::connect(&cfg.etcd).await?)
    };
    let security = if cfg.etcd.is_empty() {
        Security::load_or_create(&cfg.data_dir, &sans, &url)?
    } else {
        // Masters sharing an etcd share one CA, token table and encryption key.
        let token = crate::bootstrap::cluster_token(&cfg.data_dir, cfg.token.as_deref())?;
        let adopted = crate::bootstrap::adopt(store.as_ref(), &cfg.data_dir, &token).await?;
        let sec = Security::load_or_create(&cfg.data_dir, &sans, &url)?;
        if adopted || crate::bootstrap::publish(store.as_ref(), &cfg.data_dir, &token).await? {
            sec
        } else {
            Security::load_or_create(&cfg.data_dir, &sans, &url)?
        }
    };
    let codec = Codec::new(Some(security.encryption_key));
    ensure_namespaces(store.as_ref(), &codec).await?;
    let advertise = crate::default_services::advertise_address(addr, &cfg.tls_san);
    crate::default_services::ensure(store.as_ref(), &codec, advertise)
        .await
        .map_err(|e| MasterError::Io(e.to_string()))?;
    // The Service ranges hold what existing Services hold before anything is allocated.
    let services = crate::resources::find("", "v1", "services").expect("services");
    let page = store.list(&services.prefix(), None, 0, None).await?;
    let existing: Vec<serde_json::Value> = page
        .items
        .iter()
        .filter_map(|kv| codec.decode(kv).ok())
        .collect();
    crate::controllers::service_ranges::initialize(store.as_ref(), &existing)
        .await
        .map_err(|e| MasterError::Io(format!("service ranges: {e}")))?;
    let cache = WatchCache::start(store.clone(), codec.clone()).await?;
    let compactor = store.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(60)).await;
            if let Ok(rev) = compactor.current_revision().await {
                if rev > HISTORY {
                    if let Err(e) = compactor.compact(rev - HISTORY).await {
                        tracing::warn!(error = %e, "compaction");
                    }
                }
            }
        }
    });
    let state = Arc::new(Inner {
        store,
        codec,
        cache,
        tokens: Some(security.tokens.clone()),
        address: format!("{host}:{}", addr.port()),
    });
    let identity = format!(
        "{}-{}",
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim(),
        crate::api::objects::new_uid()
    );
    tokio::spawn(crate::controllers::leader::run(
        crate::controllers::Ctx { st: state.clone() },
        identity,
    ));
    let tls =
        axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(security.server_config()?));
    let handle = axum_server::Handle::new();
    let h = handle.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("signal handler");
        let mut int = signal(SignalKind::interrupt()).expect("signal handler");
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        h.graceful_shutdown(Some(Duration::from_secs(5)));
    });
    ready(addr, &security);
    axum_server::from_tcp_rustls(listener, tls)
        .map_err(|e| MasterError::Io(e.to_string()))?
        .handle(handle)
        .serve(router(state).into_make_service())
        .await
        .map_err(|e| MasterError::Io(e.to_string()))
}
