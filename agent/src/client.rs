//! Joining the cluster: the join token buys a token of the node's own
//! (`POST /podlet/v1/join`), kept in `<data dir>/node-token` (0600) for restarts; the API client
//! then authenticates with it and verifies the master against the cluster CA.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::Engine as _;

use crate::{AgentConfig, AgentError};

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> AgentError + 'a {
    move |source| AgentError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The DER certificates in a PEM file.
pub fn pem_certificates(pem: &str) -> Result<Vec<Vec<u8>>, AgentError> {
    let mut out = Vec::new();
    let mut b64 = None::<String>;
    for line in pem.lines() {
        let line = line.trim();
        if line == "-----BEGIN CERTIFICATE-----" {
            b64 = Some(String::new());
        } else if line == "-----END CERTIFICATE-----" {
            let text = b64.take().unwrap_or_default();
            let der = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| AgentError::Invalid(format!("CA certificate: bad base64: {e}")))?;
            out.push(der);
        } else if let Some(b) = b64.as_mut() {
            b.push_str(line);
        }
    }
    if out.is_empty() {
        return Err(AgentError::Invalid(
            "CA file holds no PEM certificate".into(),
        ));
    }
    Ok(out)
}

fn client_with(cfg: &AgentConfig, token: &str) -> Result<kube::Client, AgentError> {
    let url: http::Uri = cfg
        .server
        .parse()
        .map_err(|e| AgentError::Invalid(format!("--server {:?}: {e}", cfg.server)))?;
    let pem = std::fs::read_to_string(&cfg.ca_file).map_err(io("read", &cfg.ca_file))?;
    let mut config = kube::Config::new(url);
    config.root_cert = Some(pem_certificates(&pem)?);
    config.auth_info.token = Some(secrecy::SecretString::from(token.to_string()));
    config.read_timeout = Some(std::time::Duration::from_secs(330));
    Ok(kube::Client::try_from(config)?)
}

/// The node's token: read from `<data dir>/node-token`, or obtained with the join token and
/// saved there.
pub async fn node_token(cfg: &AgentConfig) -> Result<String, AgentError> {
    let path = cfg.data_dir.join("node-token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim().to_string();
        if !t.is_empty() {
            return Ok(t);
        }
    }
    let joiner = client_with(cfg, &cfg.join_token)?;
    let body = serde_json::to_vec(&serde_json::json!({"nodeName": cfg.node_name}))
        .map_err(|e| AgentError::Invalid(e.to_string()))?;
    let req = http::Request::post("/podlet/v1/join")
        .header("content-type", "application/json")
        .body(body)
        .map_err(|e| AgentError::Invalid(e.to_string()))?;
    let text = joiner.request_text(req).await?;
    let answer: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| AgentError::Invalid(format!("join answer: {e}")))?;
    let token = answer["token"]
        .as_str()
        .ok_or_else(|| AgentError::Invalid(format!("join answer without a token: {text}")))?
        .to_string();
    std::fs::create_dir_all(&cfg.data_dir).map_err(io("create", &cfg.data_dir))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(io("write", &path))?;
    writeln!(f, "{token}").map_err(io("write", &path))?;
    Ok(token)
}

/// The API client the agent works with, authenticated as its node.
pub async fn connect(cfg: &AgentConfig) -> Result<kube::Client, AgentError> {
    let token = node_token(cfg).await?;
    client_with(cfg, &token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_blocks_become_der() {
        let pem = "junk\n-----BEGIN CERTIFICATE-----\nAAEC\nAw==\n-----END CERTIFICATE-----\n";
        assert_eq!(pem_certificates(pem).unwrap(), vec![vec![0, 1, 2, 3]]);
        assert!(pem_certificates("no certificate").is_err());
        let bad = "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n";
        assert!(pem_certificates(bad)
            .unwrap_err()
            .to_string()
            .contains("base64"));
    }
}
