//! Security by default, k3s style: on first start the master makes a cluster CA, a serving
//! certificate signed by it, an admin token and kubeconfig, a node join token and the Secret
//! encryption key, all under its data directory with mode 0600. Requests authenticate with
//! bearer tokens; nodes exchange the join token for a token of their own
//! (`POST /podlet/v1/join`), which only lets them write their own Node, Lease and the pods bound
//! to them.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde::{Deserialize, Serialize};

/// Why the security material could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("certificates: {0}")]
    Cert(String),
    /// A stored file is malformed.
    #[error("{0}")]
    Invalid(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AuthError + '_ {
    move |source| AuthError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a private file (mode 0600), atomically.
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), AuthError> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(data).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn random_token() -> String {
    let b: [u8; 24] = rand::random();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Who a request is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "camelCase")]
pub enum Identity {
    /// Full access.
    Admin {
        /// User name.
        user: String,
    },
    /// A node agent: reads everything, writes only its own objects.
    Node {
        /// The node's name.
        node: String,
    },
    /// Holds the join token: may only join.
    Joiner,
}

/// The token table (`tokens.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct TokenFile {
    tokens: BTreeMap<String, Identity>,
}

/// Bearer-token authentication: the admin and join tokens from the token table, and node
/// tokens `pn1.<node>.<hmac>` that any master holding the cluster's node-token key can verify
/// without a shared table.
#[derive(Clone)]
pub struct Tokens {
    table: Arc<RwLock<TokenFile>>,
    node_key: [u8; 32],
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").finish_non_exhaustive()
    }
}

/// The prefix of node tokens.
const NODE_TOKEN: &str = "pn1.";

/// Equality that looks at every byte whatever the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hmac_hex(key: &[u8; 32], msg: &str) -> String {
    use hmac::Mac;
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
    m.update(msg.as_bytes());
    m.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Tokens {
    /// Who holds `token`.
    pub fn identify(&self, token: &str) -> Option<Identity> {
        if let Some(rest) = token.strip_prefix(NODE_TOKEN) {
            let (node, mac) = rest.rsplit_once('.')?;
            let want = hmac_hex(&self.node_key, node);
            let same = constant_time_eq(want.as_bytes(), mac.as_bytes());
            return same.then(|| Identity::Node {
                node: node.to_string(),
            });
        }
        // Every entry compared in constant time: no early exit tells how close a guess was.
        let table = self.table.read().ok()?;
        let mut found = None;
        for (k, v) in &table.tokens {
            if constant_time_eq(k.as_bytes(), token.as_bytes()) {
                found = Some(v.clone());
            }
        }
        found
    }

    /// The token of node `node`.
    pub fn node_token(&self, node: &str) -> Result<String, AuthError> {
        Ok(format!(
            "{NODE_TOKEN}{node}.{}",
            hmac_hex(&self.node_key, node)
        ))
    }
}

/// The files several masters on one etcd must share (the cluster's identity).
pub const SHARED_FILES: &[&str] = &["ca.key", "ca.crt", "tokens.json", "encryption.key"];

/// Everything `podlet master` generates on first start.
#[derive(Debug, Clone)]
pub struct Security {
    /// The CA certificate (PEM).
    pub ca_pem: String,
    /// The serving certificate chain (PEM).
    pub cert_pem: String,
    /// The serving key (PEM).
    pub key_pem: String,
    /// The admin token.
    pub admin_token: String,
    /// The node join token.
    pub join_token: String,
    /// The Secret encryption key.
    pub encryption_key: [u8; 32],
    /// The token table.
    pub tokens: Tokens,
    /// Where the admin kubeconfig is.
    pub kubeconfig: PathBuf,
}

fn ca_params() -> Result<CertificateParams, AuthError> {
    let mut p =
        CertificateParams::new(Vec::<String>::new()).map_err(|e| AuthError::Cert(e.to_string()))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "podlet-ca");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(p)
}

fn read_or<T>(
    path: &Path,
    make: impl FnOnce() -> Result<T, AuthError>,
    parse: impl FnOnce(Vec<u8>) -> Result<T, AuthError>,
) -> Result<T, AuthError> {
    match std::fs::read(path) {
        Ok(b) => parse(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => make(),
        Err(e) => Err(io(path)(e)),
    }
}

impl Security {
    /// Loads the material under `dir`, making what is missing. `hosts` go into the serving
    /// certificate (names and IP addresses); `server_url` into the kubeconfig.
    pub fn load_or_create(
        dir: &Path,
        hosts: &[String],
        server_url: &str,
    ) -> Result<Security, AuthError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        // The directory holds keys and the state database: the owner's alone.
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(io(dir))?;
        let cert_err = |e: rcgen::Error| AuthError::Cert(e.to_string());
        let ca_key_path = dir.join("ca.key");
        let ca_key_pem = read_or(
            &ca_key_path,
            || {
                let k = KeyPair::generate().map_err(cert_err)?;
                let pem = k.serialize_pem();
                write_private(&ca_key_path, pem.as_bytes())?;
                Ok(pem)
            },
            |b| String::from_utf8(b).map_err(|e| AuthError::Invalid(e.to_string())),
        )?;
        let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(cert_err)?;
        let ca_crt_path = dir.join("ca.crt");
        let ca_pem = read_or(
            &ca_crt_path,
            || {
                let mut p = ca_params()?;
                p.not_after = rcgen::date_time_ymd(2036, 1, 1);
                let c = p.self_signed(&ca_key).map_err(cert_err)?;
                std::fs::write(&ca_crt_path, c.pem()).map_err(io(&ca_crt_path))?;
                Ok(c.pem())
            },
            |b| String::from_utf8(b).map_err(|e| AuthError::Invalid(e.to_string())),
        )?;
        let key_path = dir.join("server.key");
        let crt_path = dir.join("server.crt");
        let (cert_pem, key_pem) = match (
            std::fs::read_to_string(&crt_path),
            std::fs::read_to_string(&key_path),
        ) {
            (Ok(c), Ok(k)) => (c, k),
            _ => {
                let k = KeyPair::generate().map_err(cert_err)?;
                let mut names: Vec<String> = vec![
                    "localhost".into(),
                    "127.0.0.1".into(),
                    "kubernetes".into(),
                    "kubernetes.default".into(),
                ];
                for h in hosts {
                    if !names.contains(h) {
                        names.push(h.clone());
                    }
                }
                let mut p = CertificateParams::new(names).map_err(cert_err)?;
                let mut dn = DistinguishedName::new();
                dn.push(DnType::CommonName, "podlet-master");
                p.distinguished_name = dn;
                p.not_after = rcgen::date_time_ymd(2036, 1, 1);
                p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
                let issuer = Issuer::new(ca_params()?, &ca_key);
                let c = p.signed_by(&k, &issuer).map_err(cert_err)?;
                write_private(&key_path, k.serialize_pem().as_bytes())?;
                std::fs::write(&crt_path, c.pem()).map_err(io(&crt_path))?;
                (c.pem(), k.serialize_pem())
            }
        };
        let tokens_path = dir.join("tokens.json");
        let table: TokenFile = read_or(
            &tokens_path,
            || {
                let mut t = TokenFile::default();
                t.tokens.insert(
                    random_token(),
                    Identity::Admin {
                        user: "admin".into(),
                    },
                );
                t.tokens.insert(random_token(), Identity::Joiner);
                let bytes =
                    serde_json::to_vec_pretty(&t).map_err(|e| AuthError::Invalid(e.to_string()))?;
                write_private(&tokens_path, &bytes)?;
                Ok(t)
            },
            |b| {
                serde_json::from_slice(&b)
                    .map_err(|e| AuthError::Invalid(format!("{}: {e}", tokens_path.display())))
            },
        )?;
        let find = |want: fn(&Identity) -> bool| {
            table
                .tokens
                .iter()
                .find(|(_, v)| want(v))
                .map(|(k, _)| k.clone())
                .ok_or_else(|| {
                    AuthError::Invalid(format!("{}: missing a token", tokens_path.display()))
                })
        };
        let admin_token = find(|v| matches!(v, Identity::Admin { .. }))?;
        let join_token = find(|v| matches!(v, Identity::Joiner))?;
        let enc_path = dir.join("encryption.key");
        let encryption_key: [u8; 32] = read_or(
            &enc_path,
            || {
                let k: [u8; 32] = rand::random();
                write_private(
                    &enc_path,
                    base64::engine::general_purpose::STANDARD
                        .encode(k)
                        .as_bytes(),
                )?;
                Ok(k)
            },
            |b| {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(String::from_utf8_lossy(&b).trim())
                    .map_err(|e| AuthError::Invalid(format!("{}: {e}", enc_path.display())))?;
                raw.try_into().map_err(|_| {
                    AuthError::Invalid(format!("{}: not a 32-byte key", enc_path.display()))
                })
            },
        )?;
        write_private(
            &dir.join("node-token"),
            format!("{join_token}\n").as_bytes(),
        )?;
        let kubeconfig = dir.join("admin.kubeconfig");
        let kc = kubeconfig_text(server_url, &ca_pem, &admin_token, "admin");
        write_private(&kubeconfig, kc.as_bytes())?;
        Ok(Security {
            ca_pem,
            cert_pem,
            key_pem,
            admin_token,
            join_token,
            encryption_key,
            tokens: Tokens {
                table: Arc::new(RwLock::new(table)),
                node_key: {
                    use sha2::Digest;
                    let mut h = sha2::Sha256::new();
                    h.update(b"podlet node tokens");
                    h.update(encryption_key);
                    h.finalize().into()
                },
            },
            kubeconfig,
        })
    }

    /// The rustls server configuration for the serving certificate.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, AuthError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| AuthError::Invalid(format!("serving certificate: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| AuthError::Invalid(format!("serving key: {e}")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| AuthError::Cert(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| AuthError::Cert(e.to_string()))?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(cfg)
    }
}

/// A kubeconfig for `user` with `token`, trusting `ca_pem`, pointing at `server`.
pub fn kubeconfig_text(server: &str, ca_pem: &str, token: &str, user: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: podlet\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: podlet\n  context:\n    cluster: podlet\n    user: {user}\n    namespace: default\ncurrent-context: podlet\n"
    )
}
