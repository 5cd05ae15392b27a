//! How objects are stored: JSON, with Secrets sealed with AES-256-GCM under a key file (like
//! kube-apiserver's `aesgcm` encryption provider). The `resourceVersion` is never stored; it is
//! the key's `mod_revision`, set on the way out.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use serde_json::Value;

use super::status::ApiError;
use crate::store::KeyValue;

/// The prefix of sealed values (`k8s:enc:aesgcm:v1:<key name>:`).
const SEALED: &[u8] = b"k8s:enc:aesgcm:v1:podlet:";

/// Encodes and decodes stored objects.
#[derive(Clone)]
pub struct Codec {
    cipher: Option<Aes256Gcm>,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec")
            .field("encrypts_secrets", &self.cipher.is_some())
            .finish()
    }
}

impl Codec {
    /// A codec that seals Secrets with `key` (32 bytes), or stores them plain with None.
    pub fn new(key: Option<[u8; 32]>) -> Codec {
        Codec {
            cipher: key.map(|k| Aes256Gcm::new(&k.into())),
        }
    }

    /// The stored bytes of `obj` (its resourceVersion removed; Secrets sealed).
    pub fn encode(&self, obj: &Value) -> Result<Vec<u8>, ApiError> {
        let mut obj = obj.clone();
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
        let plain = serde_json::to_vec(&obj).map_err(|e| ApiError::Internal(e.to_string()))?;
        match (&self.cipher, obj["kind"].as_str()) {
            (Some(c), Some("Secret")) => {
                let mut nonce = [0u8; 12];
                rand::rng().fill_bytes(&mut nonce);
                let sealed = c
                    .encrypt(Nonce::from_slice(&nonce), plain.as_slice())
                    .map_err(|_| ApiError::Internal("sealing a secret failed".into()))?;
                let mut out = SEALED.to_vec();
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&sealed);
                Ok(out)
            }
            _ => Ok(plain),
        }
    }

    /// The object in `kv`, with `metadata.resourceVersion` set to its revision.
    pub fn decode(&self, kv: &KeyValue) -> Result<Value, ApiError> {
        let mut obj = self.decode_bytes(&kv.value)?;
        obj["metadata"]["resourceVersion"] = Value::String(kv.mod_revision.to_string());
        Ok(obj)
    }

    /// The object in `kv` as JSON bytes with its resourceVersion, without parsing it: the
    /// stored encoding has sorted keys, so the first `"metadata":{` is the object's own.
    pub fn raw_with_rv(&self, kv: &KeyValue) -> Result<Vec<u8>, ApiError> {
        let opened;
        let plain: &[u8] = if kv.value.starts_with(SEALED) {
            opened = serde_json::to_vec(&self.decode_bytes(&kv.value)?)
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            &opened
        } else {
            &kv.value
        };
        const META: &[u8] = b"\"metadata\":{";
        let Some(at) = plain.windows(META.len()).position(|w| w == META) else {
            // Not the expected shape: take the slow, safe path.
            return serde_json::to_vec(&self.decode(kv)?)
                .map_err(|e| ApiError::Internal(e.to_string()));
        };
        let insert = at + META.len();
        let rv = format!("\"resourceVersion\":\"{}\"", kv.mod_revision);
        let mut out = Vec::with_capacity(plain.len() + rv.len() + 1);
        out.extend_from_slice(&plain[..insert]);
        out.extend_from_slice(rv.as_bytes());
        if plain.get(insert) != Some(&b'}') {
            out.push(b',');
        }
        out.extend_from_slice(&plain[insert..]);
        Ok(out)
    }

    /// Decodes stored bytes (unsealing them if needed).
    pub fn decode_bytes(&self, bytes: &[u8]) -> Result<Value, ApiError> {
        let plain;
        let data = if let Some(rest) = bytes.strip_prefix(SEALED) {
            let c = self.cipher.as_ref().ok_or_else(|| {
                ApiError::Internal(
                    "a sealed secret is stored but no encryption key is configured".into(),
                )
            })?;
            if rest.len() < 12 {
                return Err(ApiError::Internal("sealed value too short".into()));
            }
            plain = c
                .decrypt(Nonce::from_slice(&rest[..12]), &rest[12..])
                .map_err(|_| {
                    ApiError::Internal("a sealed secret does not open with this key".into())
                })?;
            plain.as_slice()
        } else {
            bytes
        };
        serde_json::from_slice(data).map_err(|e| ApiError::Internal(format!("stored object: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_sealed_and_other_kinds_are_not() {
        let c = Codec::new(Some([7; 32]));
        let s = json!({"kind": "Secret", "metadata": {"name": "s", "resourceVersion": "5"}, "data": {"k": "c2VjcmV0"}});
        let bytes = c.encode(&s).unwrap();
        assert!(bytes.starts_with(SEALED));
        assert!(!String::from_utf8_lossy(&bytes).contains("c2VjcmV0"));
        let kv = KeyValue {
            key: "k".into(),
            value: bytes,
            create_revision: 1,
            mod_revision: 9,
        };
        let back = c.decode(&kv).unwrap();
        assert_eq!(back["data"]["k"], "c2VjcmV0");
        assert_eq!(back["metadata"]["resourceVersion"], "9");
        let cm = json!({"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}});
        assert!(String::from_utf8_lossy(&c.encode(&cm).unwrap()).contains("\"k\":\"v\""));
        // The raw path gives the same object as the parsed one.
        let raw: Value = serde_json::from_slice(&c.raw_with_rv(&kv).unwrap()).unwrap();
        assert_eq!(raw, back);
        let cm_kv = KeyValue {
            key: "c".into(),
            value: c.encode(&cm).unwrap(),
            create_revision: 1,
            mod_revision: 4,
        };
        let raw: Value = serde_json::from_slice(&c.raw_with_rv(&cm_kv).unwrap()).unwrap();
        assert_eq!(
            raw["metadata"],
            json!({"name": "c", "resourceVersion": "4"})
        );
        let empty = KeyValue {
            key: "e".into(),
            value: br#"{"kind":"X","metadata":{}}"#.to_vec(),
            create_revision: 1,
            mod_revision: 2,
        };
        let raw: Value = serde_json::from_slice(&c.raw_with_rv(&empty).unwrap()).unwrap();
        assert_eq!(raw["metadata"]["resourceVersion"], "2");
        // Another key cannot open it.
        let other = Codec::new(Some([8; 32]));
        assert!(other.decode(&kv).is_err());
    }
}
