//! Pulling from and pushing to OCI / Docker registries (distribution spec v2): bearer-token and
//! basic authentication, manifest lists resolved to this platform, parallel blob downloads,
//! blobs already in the store skipped, every byte verified against its digest.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;

use serde_json::Value;

use super::digest::Digest;
use super::reference::Reference;
use super::store::{ImageError, ImageRecord, ImageStore};

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Reports transfers: progress bars on a terminal, plain lines otherwise.
pub trait Progress: Sync {
    /// A blob the destination already has.
    fn skipped(&self, digest: &Digest, size: u64);
    /// A blob transfer begins; the handle is told about every chunk and the end.
    fn started(&self, digest: &Digest, size: u64) -> Box<dyn BlobProgress>;
}

/// One blob's transfer.
pub trait BlobProgress: Send {
    /// `n` more bytes moved.
    fn advance(&self, n: u64);
    /// The blob is complete and verified.
    fn done(&self);
}

/// Prints one plain line per blob (logs, pipes).
pub struct PlainProgress;

struct PlainBlob(String, u64);

impl BlobProgress for PlainBlob {
    fn advance(&self, _n: u64) {}
    fn done(&self) {
        eprintln!("Copied blob {} ({} bytes)", self.0, self.1);
    }
}

impl Progress for PlainProgress {
    fn skipped(&self, digest: &Digest, _size: u64) {
        eprintln!("Blob {} already present", digest.short());
    }
    fn started(&self, digest: &Digest, size: u64) -> Box<dyn BlobProgress> {
        Box::new(PlainBlob(digest.short().to_string(), size))
    }
}

/// A reader that reports what passes through it.
struct Counting<'a, R> {
    inner: R,
    progress: &'a dyn BlobProgress,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

/// A registry client.
pub struct RegistryClient {
    agent: ureq::Agent,
    /// Use plain HTTP (and skip TLS verification) — `--tls-verify=false`, and always for
    /// `localhost`/`127.0.0.1` registries.
    pub insecure: bool,
    /// `user:password` for basic auth and token requests.
    pub credentials: Option<(String, String)>,
    tokens: Mutex<HashMap<String, String>>,
}

fn err(what: impl Into<String>, reason: impl Into<String>) -> ImageError {
    ImageError::Invalid {
        what: what.into(),
        reason: reason.into(),
    }
}

/// A registry's error body (`{"errors":[{"code","message"}]}`) as one line.
fn registry_message(resp: ureq::Response) -> String {
    let status = resp.status();
    let body: Value = serde_json::from_reader(resp.into_reader()).unwrap_or(Value::Null);
    let msgs: Vec<String> = body["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            format!(
                "{}: {}",
                e["code"].as_str().unwrap_or("ERROR"),
                e["message"].as_str().unwrap_or("")
            )
        })
        .collect();
    if msgs.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {}", msgs.join("; "))
    }
}

/// Parses `Bearer realm="…",service="…",scope="…"`.
fn parse_challenge(h: &str) -> Option<(String, HashMap<String, String>)> {
    let (scheme, rest) = h.split_once(' ')?;
    let mut params = HashMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let (k, v) = s.split_once('=')?;
        let v = v.trim_start();
        let (val, tail) = if let Some(q) = v.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], &q[end + 1..])
        } else {
            v.split_once(',').unwrap_or((v, ""))
        };
        params.insert(k.trim().to_ascii_lowercase(), val.to_string());
        s = tail.trim_start_matches([',', ' ']);
    }
    Some((scheme.to_ascii_lowercase(), params))
}

impl RegistryClient {
    /// A client; `insecure` allows plain HTTP.
    pub fn new(insecure: bool, credentials: Option<(String, String)>) -> RegistryClient {
        RegistryClient {
            agent: ureq::AgentBuilder::new()
                .timeout_connect(std::time::Duration::from_secs(15))
                .redirects(5)
                .build(),
            insecure,
            credentials,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    fn base(&self, r: &Reference) -> String {
        let host = if r.registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            &r.registry
        };
        let local = is_loopback_host(host);
        let scheme = if self.insecure || local {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{host}/v2/{}", r.repository)
    }

    fn basic(&self) -> Option<String> {
        use base64::Engine as _;
        self.credentials.as_ref().map(|(u, p)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        })
    }

    /// Answers a 401 challenge: a bearer token from the realm, or basic credentials.
    fn authorize(&self, challenge: &str, scope: &str) -> Result<String, ImageError> {
        let (scheme, params) = parse_challenge(challenge)
            .ok_or_else(|| err("registry", "unreadable auth challenge"))?;
        if scheme == "basic" {
            return self.basic().ok_or_else(|| {
                err(
                    "registry",
                    "authentication required (give --creds USER:PASS)",
                )
            });
        }
        let realm = params
            .get("realm")
            .ok_or_else(|| err("registry", "auth challenge without realm"))?;
        let mut req = self.agent.get(realm);
        if let Some(s) = params.get("service") {
            req = req.query("service", s);
        }
        req = req.query(
            "scope",
            params.get("scope").map(String::as_str).unwrap_or(scope),
        );
        if let Some(b) = self.basic() {
            req = req.set("Authorization", &b);
        }
        let resp = req.call().map_err(|e| match e {
            ureq::Error::Status(_, r) => err("token server", registry_message(r)),
            e => err("token server", e.to_string()),
        })?;
        let body: Value = serde_json::from_reader(resp.into_reader())
            .map_err(|e| err("token server", e.to_string()))?;
        let token = body["token"]
            .as_str()
            .or(body["access_token"].as_str())
            .ok_or_else(|| err("token server", "no token in the answer"))?;
        Ok(format!("Bearer {token}"))
    }

    /// Sends a request, answering one auth challenge.
    fn send(
        &self,
        method: &str,
        url: &str,
        scope: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<ureq::Response, ImageError> {
        let build = |auth: Option<&str>| {
            let mut req = self.agent.request(method, url);
            for (k, v) in headers {
                req = req.set(k, v);
            }
            if let Some(a) = auth {
                req = req.set("Authorization", a);
            }
            req
        };
        let cached = self.tokens.lock().ok().and_then(|t| t.get(scope).cloned());
        // ureq's error is large: box it between the call and the match.
        let call = |auth: Option<&str>| -> Result<ureq::Response, Box<ureq::Error>> {
            match body {
                Some(b) => build(auth).send_bytes(b),
                None => build(auth).call(),
            }
            .map_err(Box::new)
        };
        match call(cached.as_deref()).map_err(|e| *e) {
            Ok(r) => Ok(r),
            Err(ureq::Error::Status(401, r)) => {
                let challenge = r.header("www-authenticate").unwrap_or("").to_string();
                let auth = self.authorize(&challenge, scope)?;
                if let Ok(mut t) = self.tokens.lock() {
                    t.insert(scope.to_string(), auth.clone());
                }
                call(Some(&auth)).map_err(|e| match *e {
                    ureq::Error::Status(_, r) => err(url.to_string(), registry_message(r)),
                    e => err(url.to_string(), e.to_string()),
                })
            }
            Err(ureq::Error::Status(_, r)) => Err(err(url.to_string(), registry_message(r))),
            Err(e) => Err(err(url.to_string(), e.to_string())),
        }
    }

    fn get_manifest(&self, r: &Reference, what: &str) -> Result<(Vec<u8>, Digest), ImageError> {
        let scope = format!("repository:{}:pull", r.repository);
        let url = format!("{}/manifests/{what}", self.base(r));
        let resp = self.send("GET", &url, &scope, &[("Accept", ACCEPT)], None)?;
        let mut data = Vec::new();
        resp.into_reader()
            .take(8 << 20)
            .read_to_end(&mut data)
            .map_err(|e| err(url.clone(), e.to_string()))?;
        Ok((data.clone(), Digest::of(&data)))
    }

    /// Pulls `r` into the store and tags it; returns the stored image.
    pub fn pull(
        &self,
        store: &ImageStore,
        r: &Reference,
        progress: &dyn Progress,
    ) -> Result<ImageRecord, ImageError> {
        let what = match (&r.digest, &r.tag) {
            (Some(d), _) => d.as_str().to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".into(),
        };
        let (mut data, mut digest) = self.get_manifest(r, &what)?;
        if let Some(want) = &r.digest {
            if *want != digest {
                return Err(ImageError::DigestMismatch {
                    what: format!("manifest of {}", r.canonical()),
                    expected: want.clone(),
                    actual: digest,
                });
            }
        }
        let mut doc: Value = serde_json::from_slice(&data)
            .map_err(|e| err(format!("manifest of {}", r.canonical()), e.to_string()))?;
        if doc["manifests"].is_array() {
            let arch = match std::env::consts::ARCH {
                "x86_64" => "amd64",
                "aarch64" => "arm64",
                a => a,
            };
            let pick = doc["manifests"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == arch)
                .ok_or_else(|| err(r.canonical(), format!("no linux/{arch} image in the list")))?;
            let want = Digest::parse(pick["digest"].as_str().unwrap_or(""))?;
            (data, digest) = self.get_manifest(r, want.as_str())?;
            if digest != want {
                return Err(ImageError::DigestMismatch {
                    what: format!("platform manifest of {}", r.canonical()),
                    expected: want,
                    actual: digest,
                });
            }
            doc = serde_json::from_slice(&data)
                .map_err(|e| err(format!("manifest {digest}"), e.to_string()))?;
        }
        let mut blobs = vec![(
            Digest::parse(doc["config"]["digest"].as_str().unwrap_or(""))?,
            doc["config"]["size"].as_u64().unwrap_or(0),
        )];
        for l in doc["layers"].as_array().into_iter().flatten() {
            blobs.push((
                Digest::parse(l["digest"].as_str().unwrap_or(""))?,
                l["size"].as_u64().unwrap_or(0),
            ));
        }
        // Up to three downloads at a time; present blobs are skipped.
        let scope = format!("repository:{}:pull", r.repository);
        let queue = Mutex::new(blobs.into_iter());
        let failure: Mutex<Option<ImageError>> = Mutex::new(None);
        // Blobs this pull stored: removed again if it fails, so nothing is half-stored.
        let fresh: Mutex<Vec<Digest>> = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| loop {
                    let next = queue.lock().ok().and_then(|mut q| q.next());
                    let Some((d, size)) = next else { return };
                    if store.has_blob(&d) {
                        progress.skipped(&d, size);
                        continue;
                    }
                    let url = format!("{}/blobs/{d}", self.base(r));
                    let bar = progress.started(&d, size);
                    let res = self.send("GET", &url, &scope, &[], None).and_then(|resp| {
                        let counted = Counting {
                            inner: resp.into_reader(),
                            progress: bar.as_ref(),
                        };
                        store.put_blob(counted, Some(&d))
                    });
                    match res {
                        Ok(_) => {
                            if let Ok(mut f) = fresh.lock() {
                                f.push(d.clone());
                            }
                            bar.done()
                        }
                        Err(e) => {
                            if let Ok(mut f) = failure.lock() {
                                f.get_or_insert(e);
                            }
                            return;
                        }
                    }
                });
            }
        });
        let fresh = fresh.into_inner().unwrap_or_default();
        let result = match failure.into_inner().ok().flatten() {
            Some(e) => Err(e),
            None => store
                .put_blob(&data[..], Some(&digest))
                .and_then(|_| store.tag(r, &digest)),
        };
        if result.is_err() {
            for d in &fresh {
                let _ = std::fs::remove_file(store.blob_path(d));
            }
        }
        result
    }

    /// Pushes a stored image to `dest` (blobs the registry has are skipped).
    pub fn push(
        &self,
        store: &ImageStore,
        image: &ImageRecord,
        dest: &Reference,
        progress: &dyn Progress,
    ) -> Result<Digest, ImageError> {
        let scope = format!("repository:{}:pull,push", dest.repository);
        let base = self.base(dest);
        let manifest = store.read_blob(&image.manifest)?;
        let mt = serde_json::from_slice::<Value>(&manifest)
            .ok()
            .and_then(|v| v["mediaType"].as_str().map(str::to_string))
            .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".into());
        let mut blobs: Vec<Digest> = image.layers.iter().map(|(b, _)| b.clone()).collect();
        blobs.push(image.config.clone());
        for d in blobs {
            let head = self.send("HEAD", &format!("{base}/blobs/{d}"), &scope, &[], None);
            if head.is_ok() {
                progress.skipped(&d, 0);
                continue;
            }
            let start = self.send(
                "POST",
                &format!("{base}/blobs/uploads/"),
                &scope,
                &[],
                Some(b""),
            )?;
            let location = start
                .header("location")
                .ok_or_else(|| err("registry", "upload without Location"))?
                .to_string();
            let location = if location.starts_with("http") {
                location
            } else {
                let origin = base.split("/v2/").next().unwrap_or("");
                format!("{origin}{location}")
            };
            let sep = if location.contains('?') { '&' } else { '?' };
            let data = store.read_blob(&d)?;
            let bar = progress.started(&d, data.len() as u64);
            self.send(
                "PUT",
                &format!("{location}{sep}digest={d}"),
                &scope,
                &[("Content-Type", "application/octet-stream")],
                Some(&data),
            )?;
            bar.advance(data.len() as u64);
            bar.done();
        }
        let tag = dest.tag.clone().unwrap_or_else(|| "latest".into());
        self.send(
            "PUT",
            &format!("{base}/manifests/{tag}"),
            &scope,
            &[("Content-Type", &mt)],
            Some(&manifest),
        )?;
        Ok(image.manifest.clone())
    }
}

/// Whether a registry host (`name[:port]`) is this machine: `localhost` or a loopback
/// address — plain HTTP is only ever assumed for those (`localhost.example.com` is not one).
pub fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        }),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_real_loopback_hosts_are_local() {
        for local in [
            "localhost",
            "localhost:5000",
            "LOCALHOST:5000",
            "127.0.0.1",
            "127.0.0.1:5000",
            "127.1.2.3:80",
            "[::1]:5000",
        ] {
            assert!(super::is_loopback_host(local), "{local}");
        }
        for remote in [
            "localhost.example.com",
            "localhost.example.com:5000",
            "127.0.0.1.nip.io",
            "127.0.0.1.example.com:443",
            "registry.example.com",
            "10.0.0.1:5000",
        ] {
            assert!(!super::is_loopback_host(remote), "{remote}");
        }
    }

    use super::*;

    #[test]
    fn challenges_parse() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        )
        .unwrap();
        assert_eq!(s, "bearer");
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["scope"], "repository:library/busybox:pull");
        let (s, p) = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(
            (s.as_str(), p["realm"].as_str()),
            ("basic", "Registry Realm")
        );
    }
}
