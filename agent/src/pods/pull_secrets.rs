//! Registry credentials from a pod's `imagePullSecrets`: `kubernetes.io/dockerconfigjson`
//! (`.dockerconfigjson`, `{"auths": {…}}`) and the older `kubernetes.io/dockercfg`
//! (`.dockercfg`, the `auths` map alone), matched to an image the way kubelet does: the entry
//! whose registry (and optional repository path prefix) matches the image, most specific first.

use base64::Engine as _;
use k8s_openapi::api::core::v1::Pod;

use super::refs::Refs;

/// A user name and password for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The user name.
    pub username: String,
    /// The password or token.
    pub password: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        write!(f, "Credential({:?}, <redacted>)", self.username)
    }
}

/// One `auths` entry: where it applies, and what it gives.
#[derive(Debug, Clone)]
struct Entry {
    /// `host[:port][/path]`, normalised (no scheme, no `/v1/`-style API suffix).
    prefix: String,
    credential: Credential,
}

/// The names of the pod's pull secrets, in order.
pub fn names(pod: &Pod) -> Vec<String> {
    pod.spec
        .iter()
        .flat_map(|s| s.image_pull_secrets.iter().flatten())
        .map(|r| r.name.clone())
        .filter(|n| !n.is_empty())
        .collect()
}

/// Docker Hub's many spellings, as one.
fn canonical_host(host: &str) -> &str {
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io",
        h => h,
    }
}

/// `https://host:port/v1/` → `host:port`; `host/path` keeps its path.
fn normalise(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key)
        .trim_end_matches('/');
    let k = k
        .strip_suffix("/v1")
        .or_else(|| k.strip_suffix("/v2"))
        .unwrap_or(k);
    let (host, path) = k.split_once('/').unwrap_or((k, ""));
    let host = canonical_host(host);
    if path.is_empty() {
        host.to_string()
    } else {
        format!("{host}/{path}")
    }
}

fn entries_of(data: &[u8]) -> Result<Vec<Entry>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(data).map_err(|e| format!("not valid JSON: {e}"))?;
    let auths = v.get("auths").unwrap_or(&v);
    let map = auths
        .as_object()
        .ok_or("expected an object of registries")?;
    let mut out = Vec::new();
    for (key, entry) in map {
        let user = entry["username"].as_str().unwrap_or("");
        let pass = entry["password"].as_str().unwrap_or("");
        let credential = if !user.is_empty() || !pass.is_empty() {
            Credential {
                username: user.to_string(),
                password: pass.to_string(),
            }
        } else if let Some(auth) = entry["auth"].as_str() {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| format!("registry {key:?}: \"auth\" is not base64"))?;
            let text = String::from_utf8(raw)
                .map_err(|_| format!("registry {key:?}: \"auth\" is not UTF-8"))?;
            let (u, p) = text
                .split_once(':')
                .ok_or_else(|| format!("registry {key:?}: \"auth\" is not user:password"))?;
            Credential {
                username: u.to_string(),
                password: p.to_string(),
            }
        } else {
            continue;
        };
        out.push(Entry {
            prefix: normalise(key),
            credential,
        });
    }
    Ok(out)
}

/// The credentials for `registry/repository` from the pod's pull secrets, best match first
/// (kubelet tries each in turn). A named secret that is missing is skipped, as kubelet does
/// (with a warning); one that is malformed is an error naming it.
pub fn credentials_for(
    pod: &Pod,
    refs: &Refs,
    registry: &str,
    repository: &str,
) -> Result<Vec<Credential>, String> {
    let image = format!("{}/{repository}", canonical_host(registry));
    let mut found: Vec<(usize, usize, Credential)> = Vec::new();
    for (order, name) in names(pod).iter().enumerate() {
        let Some(Some(data)) = refs.secrets.get(name) else {
            tracing::warn!(secret = %name, "imagePullSecret not found; pulling without it");
            continue;
        };
        let raw = data
            .get(".dockerconfigjson")
            .or_else(|| data.get(".dockercfg"))
            .ok_or_else(|| {
                format!("imagePullSecret {name:?} has neither .dockerconfigjson nor .dockercfg")
            })?;
        let entries = entries_of(raw).map_err(|e| format!("imagePullSecret {name:?}: {e}"))?;
        for e in entries {
            let matches = image == e.prefix
                || image
                    .strip_prefix(&e.prefix)
                    .is_some_and(|rest| rest.starts_with('/'));
            if matches {
                found.push((usize::MAX - e.prefix.len(), order, e.credential));
            }
        }
    }
    found.sort_by_key(|(specificity, order, _)| (*specificity, *order));
    let mut out: Vec<Credential> = Vec::new();
    for (_, _, c) in found {
        if !out.contains(&c) {
            out.push(c);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(secrets: &[&str]) -> Pod {
        let refs: Vec<_> = secrets
            .iter()
            .map(|n| serde_json::json!({ "name": n }))
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"imagePullSecrets": refs, "containers": [{"name": "c", "image": "x"}]}
        }))
        .unwrap()
    }

    fn refs(entries: &[(&str, &str, &str)]) -> Refs {
        let mut r = Refs::default();
        for (name, key, json) in entries {
            r.secrets.insert(
                name.to_string(),
                Some([(key.to_string(), json.as_bytes().to_vec())].into()),
            );
        }
        r
    }

    #[test]
    fn dockerconfigjson_matches_host_and_port_with_username_or_auth() {
        let auth = base64::engine::general_purpose::STANDARD.encode("bob:hunter2");
        let r = refs(&[
            (
                "a",
                ".dockerconfigjson",
                r#"{"auths":{"https://localhost:5000/v2/":{"username":"alice","password":"pw"}}}"#,
            ),
            (
                "b",
                ".dockercfg",
                &format!(r#"{{"index.docker.io":{{"auth":"{auth}"}}}}"#),
            ),
        ]);
        let p = pod(&["missing", "a", "b"]);
        let c = credentials_for(&p, &r, "localhost:5000", "team/app").unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(
            (c[0].username.as_str(), c[0].password.as_str()),
            ("alice", "pw")
        );
        let c = credentials_for(&p, &r, "docker.io", "library/busybox").unwrap();
        assert_eq!(
            (c[0].username.as_str(), c[0].password.as_str()),
            ("bob", "hunter2")
        );
        assert!(credentials_for(&p, &r, "localhost:5001", "team/app")
            .unwrap()
            .is_empty());
        // The password never reaches a log line through Debug.
        assert!(!format!("{:?}", c[0]).contains("hunter2"));
    }

    #[test]
    fn the_most_specific_path_wins_and_prefixes_stop_at_a_slash() {
        let r = refs(&[(
            "a",
            ".dockerconfigjson",
            r#"{"auths":{"reg.io":{"username":"any","password":"1"},
                         "reg.io/team":{"username":"team","password":"2"},
                         "reg.io/te":{"username":"wrong","password":"3"}}}"#,
        )]);
        let c = credentials_for(&pod(&["a"]), &r, "reg.io", "team/app").unwrap();
        let users: Vec<_> = c.iter().map(|c| c.username.as_str()).collect();
        assert_eq!(users, ["team", "any"]);
    }

    #[test]
    fn malformed_secrets_name_the_problem() {
        let r = refs(&[("bad", ".dockerconfigjson", "{not json")]);
        let err = credentials_for(&pod(&["bad"]), &r, "reg.io", "x").unwrap_err();
        assert!(err.contains("\"bad\"") && err.contains("JSON"), "{err}");
        let r = refs(&[("other", "token", "x")]);
        let err = credentials_for(&pod(&["other"]), &r, "reg.io", "x").unwrap_err();
        assert!(err.contains(".dockerconfigjson"), "{err}");
    }
}
