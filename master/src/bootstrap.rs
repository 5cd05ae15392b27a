//! One cluster identity for several masters on one etcd (k3s does the same with its datastore
//! bootstrap data): the CA, the token table and the Secret encryption key are stored in etcd at
//! [`KEY`], sealed with AES-256-GCM under a key derived from the cluster token. The first
//! master publishes its files; every later master (given the same token) writes them into its
//! own data directory before it loads them, and issues its own serving certificate from the
//! shared CA.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use sha2::Digest;

use crate::api::auth::{write_private, SHARED_FILES};
use crate::store::{Store, StoreError};

/// Where the sealed bundle lives (outside `/registry/`: no watcher ever sees it).
pub const KEY: &str = "/podlet/bootstrap";

/// Why the shared identity could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The token does not open the bundle.
    #[error("the cluster token does not open the bootstrap data stored in etcd: give this master the first master's token (--token, or its <data-dir>/cluster-token)")]
    WrongToken,
    /// A file could not be read or written.
    #[error("{0}")]
    Io(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn cipher(token: &str) -> Aes256Gcm {
    let mut h = sha2::Sha256::new();
    h.update(b"podlet bootstrap v1");
    h.update(token.as_bytes());
    let key: [u8; 32] = h.finalize().into();
    Aes256Gcm::new(&key.into())
}

fn seal(token: &str, dir: &Path) -> Result<Vec<u8>, BootstrapError> {
    let mut files = serde_json::Map::new();
    for f in SHARED_FILES {
        let p = dir.join(f);
        let bytes =
            std::fs::read(&p).map_err(|e| BootstrapError::Io(format!("{}: {e}", p.display())))?;
        files.insert(
            f.to_string(),
            base64::engine::general_purpose::STANDARD
                .encode(bytes)
                .into(),
        );
    }
    let plain = serde_json::to_vec(&files).map_err(|e| BootstrapError::Io(e.to_string()))?;
    let nonce: [u8; 12] = rand::random();
    let sealed = cipher(token)
        .encrypt(Nonce::from_slice(&nonce), plain.as_slice())
        .map_err(|_| BootstrapError::Io("sealing the bootstrap data failed".into()))?;
    Ok([nonce.to_vec(), sealed].concat())
}

fn unseal_into(token: &str, sealed: &[u8], dir: &Path) -> Result<(), BootstrapError> {
    if sealed.len() < 12 {
        return Err(BootstrapError::WrongToken);
    }
    let plain = cipher(token)
        .decrypt(Nonce::from_slice(&sealed[..12]), &sealed[12..])
        .map_err(|_| BootstrapError::WrongToken)?;
    let files: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&plain).map_err(|e| BootstrapError::Io(e.to_string()))?;
    std::fs::create_dir_all(dir)
        .map_err(|e| BootstrapError::Io(format!("{}: {e}", dir.display())))?;
    let mut ca_changed = false;
    for f in SHARED_FILES {
        let data = files
            .get(*f)
            .and_then(|v| v.as_str())
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .ok_or_else(|| BootstrapError::Io(format!("bootstrap data lacks {f}")))?;
        let p = dir.join(f);
        if std::fs::read(&p).ok().as_deref() != Some(data.as_slice()) {
            ca_changed |= f.starts_with("ca.");
            write_private(&p, &data).map_err(|e| BootstrapError::Io(e.to_string()))?;
        }
    }
    if ca_changed {
        // A serving certificate from another CA must be issued again.
        let _ = std::fs::remove_file(dir.join("server.crt"));
        let _ = std::fs::remove_file(dir.join("server.key"));
    }
    Ok(())
}

/// Before loading the local files: adopt the cluster's identity if one is stored. Returns
/// whether there was one.
pub async fn adopt(store: &dyn Store, dir: &Path, token: &str) -> Result<bool, BootstrapError> {
    match store.get(KEY).await? {
        Some(kv) => unseal_into(token, &kv.value, dir).map(|()| true),
        None => Ok(false),
    }
}

/// After the first master made its files: store them for the others. If another master won
/// the race, its identity is adopted instead (the caller reloads).
pub async fn publish(store: &dyn Store, dir: &Path, token: &str) -> Result<bool, BootstrapError> {
    match store.create(KEY, seal(token, dir)?).await {
        Ok(_) => Ok(true),
        Err(StoreError::AlreadyExists(_)) => adopt(store, dir, token).await.map(|_| false),
        Err(e) => Err(e.into()),
    }
}

/// The cluster token: given, or kept in `<dir>/cluster-token` (made on first use).
pub fn cluster_token(dir: &Path, given: Option<&str>) -> Result<String, BootstrapError> {
    let p = dir.join("cluster-token");
    std::fs::create_dir_all(dir)
        .map_err(|e| BootstrapError::Io(format!("{}: {e}", dir.display())))?;
    if let Some(t) = given {
        write_private(&p, format!("{t}\n").as_bytes())
            .map_err(|e| BootstrapError::Io(e.to_string()))?;
        return Ok(t.to_string());
    }
    match std::fs::read_to_string(&p) {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        _ => {
            let b: [u8; 24] = rand::random();
            let t: String = b.iter().map(|x| format!("{x:02x}")).collect();
            write_private(&p, format!("{t}\n").as_bytes())
                .map_err(|e| BootstrapError::Io(e.to_string()))?;
            Ok(t)
        }
    }
}
