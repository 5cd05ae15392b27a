//! The image store under podlet's root (default `/var/lib/podlet`):
//!
//! - `blobs/sha256/<hex>` — content-addressed OCI blobs, verified on the way in and out;
//! - `layers/<diff-id hex>/` — unpacked layers, shared by every image and container using them;
//! - `images.json` — `name:tag` → manifest digest (and its config and layers);
//! - `lock` — an `flock` serialising metadata writes and unpacking between podlet processes.
//!
//! Every write goes to a temporary name and is renamed into place, so a crash or a failed
//! verification leaves nothing half-stored.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::{ImageConfiguration, ImageManifest};
use serde::{Deserialize, Serialize};

use super::digest::{copy_hashed, BadDigest, Digest, HashingReader};
use super::layer::{self, LayerError};
use super::reference::{BadReference, Reference};

/// Default store root.
pub const DEFAULT_ROOT: &str = "/var/lib/podlet";

/// Errors from the image store.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Filesystem trouble.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Content did not match its digest.
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was checked.
        what: String,
        /// The expected digest.
        expected: Digest,
        /// What the content hashes to.
        actual: Digest,
    },
    /// A blob that the store should have is missing.
    #[error("blob {0} is not in the store")]
    MissingBlob(Digest),
    /// No image has this name or id.
    #[error("image {0:?} not found (see `podlet images`)")]
    UnknownImage(String),
    /// A manifest or config that does not parse.
    #[error("{what}: {reason}")]
    Invalid {
        /// What was parsed.
        what: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A bad reference.
    #[error(transparent)]
    Reference(#[from] BadReference),
    /// A bad digest.
    #[error(transparent)]
    Digest(#[from] BadDigest),
    /// A layer that could not be unpacked.
    #[error(transparent)]
    Layer(#[from] LayerError),
    /// The image is used by containers.
    #[error(
        "image {image} is in use by container(s) {containers}; remove them first or use --force"
    )]
    InUse {
        /// The image.
        image: String,
        /// The containers.
        containers: String,
    },
}

type Result<T> = std::result::Result<T, ImageError>;

/// One tagged image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Canonical `registry/repo:tag`.
    pub name: String,
    /// The manifest's digest (the image's identity when pulled by digest).
    pub manifest: Digest,
    /// The config blob's digest (the image id podlet shows).
    pub config: Digest,
    /// Layer blobs, bottom first, with the digest of their uncompressed tar (diff id).
    pub layers: Vec<(Digest, Digest)>,
    /// Sum of the layer blob sizes.
    pub size: u64,
    /// When the image was stored (RFC 3339).
    pub created: String,
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    images: Vec<ImageRecord>,
}

/// A held store lock (released on drop).
pub struct StoreLock(#[allow(dead_code)] nix::fcntl::Flock<fs::File>);

/// The image store.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

impl ImageStore {
    /// Opens (creating if needed) the store at `root`. The root is 0711 and everything in it
    /// 0700 (CVE-2021-41091 class): no unprivileged host user may list layers, read a
    /// container's `config.json` (its environment holds secrets) or logs, or reach a setuid
    /// binary a container wrote into its upper dir. Modes left open by an older podlet are
    /// closed here.
    pub fn open(root: &Path) -> Result<ImageStore> {
        use std::os::unix::fs::PermissionsExt;
        for d in ["blobs/sha256", "layers", "containers", "tmp"] {
            fs::create_dir_all(root.join(d))
                .map_err(super::io_err("create store directory", root))?;
        }
        let close = |dir: &Path, mode: u32| -> Result<()> {
            let md = fs::metadata(dir).map_err(super::io_err("stat store directory", dir))?;
            if md.permissions().mode() & 0o7777 != mode {
                fs::set_permissions(dir, fs::Permissions::from_mode(mode))
                    .map_err(super::io_err("set store directory mode", dir))?;
            }
            Ok(())
        };
        close(root, 0o711)?;
        for d in ["blobs", "layers", "containers", "tmp"] {
            close(&root.join(d), 0o700)?;
        }
        Ok(ImageStore {
            root: root.to_path_buf(),
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Takes the store-wide lock.
    pub fn lock(&self) -> Result<StoreLock> {
        let p = self.root.join("lock");
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(super::io_err("open lock", &p))?;
        let locked =
            nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| {
                ImageError::Io {
                    what: "lock",
                    path: p.clone(),
                    source: e.into(),
                }
            })?;
        Ok(StoreLock(locked))
    }

    /// Where a blob lives.
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    /// True if the blob is present.
    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    fn tmp_path(&self, tag: &str) -> PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.root
            .join("tmp")
            .join(format!("{tag}-{}-{n}", std::process::id()))
    }

    /// Stores a blob read from `r`; with `expected`, a mismatch stores nothing.
    pub fn put_blob(&self, r: impl Read, expected: Option<&Digest>) -> Result<(Digest, u64)> {
        let tmp = self.tmp_path("blob");
        let f = fs::File::create(&tmp).map_err(super::io_err("create", &tmp))?;
        let mut w = std::io::BufWriter::new(f);
        let res = copy_hashed(r, &mut w).and_then(|x| {
            w.flush()?;
            w.get_ref().sync_all()?;
            Ok(x)
        });
        let (d, len) = match res {
            Ok(x) => x,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(ImageError::Io {
                    what: "write blob",
                    path: tmp,
                    source: e,
                });
            }
        };
        if let Some(want) = expected {
            if *want != d {
                let _ = fs::remove_file(&tmp);
                return Err(ImageError::DigestMismatch {
                    what: "blob".into(),
                    expected: want.clone(),
                    actual: d,
                });
            }
        }
        let dest = self.blob_path(&d);
        fs::rename(&tmp, &dest).map_err(super::io_err("store blob", &dest))?;
        Ok((d, len))
    }

    /// Stores `data` as a blob.
    pub fn put_bytes(&self, data: &[u8]) -> Result<Digest> {
        Ok(self.put_blob(data, None)?.0)
    }

    /// Reads a blob, verifying its digest.
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>> {
        let p = self.blob_path(d);
        let data = fs::read(&p).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ImageError::MissingBlob(d.clone()),
            _ => ImageError::Io {
                what: "read blob",
                path: p.clone(),
                source: e,
            },
        })?;
        let actual = Digest::of(&data);
        if actual != *d {
            return Err(ImageError::DigestMismatch {
                what: format!("stored blob {}", p.display()),
                expected: d.clone(),
                actual,
            });
        }
        Ok(data)
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("images.json")
    }

    fn load_index(&self) -> Result<Index> {
        let p = self.index_path();
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| ImageError::Invalid {
                what: p.display().to_string(),
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Index::default()),
            Err(e) => Err(ImageError::Io {
                what: "read",
                path: p,
                source: e,
            }),
        }
    }

    fn save_index(&self, idx: &Index) -> Result<()> {
        let p = self.index_path();
        let tmp = self.tmp_path("index");
        let data = serde_json::to_vec_pretty(idx).map_err(|e| ImageError::Invalid {
            what: "images.json".into(),
            reason: e.to_string(),
        })?;
        fs::write(&tmp, data).map_err(super::io_err("write", &tmp))?;
        fs::rename(&tmp, &p).map_err(super::io_err("write", &p))
    }

    /// Parses a stored manifest and checks that its config and layers are present.
    pub fn manifest(&self, d: &Digest) -> Result<ImageManifest> {
        let data = self.read_blob(d)?;
        ImageManifest::from_reader(&data[..]).map_err(|e| ImageError::Invalid {
            what: format!("manifest {d}"),
            reason: e.to_string(),
        })
    }

    /// Parses a stored image configuration.
    pub fn config(&self, d: &Digest) -> Result<ImageConfiguration> {
        let data = self.read_blob(d)?;
        ImageConfiguration::from_reader(&data[..]).map_err(|e| ImageError::Invalid {
            what: format!("image config {d}"),
            reason: e.to_string(),
        })
    }

    /// Tags the stored manifest `manifest` as `reference`.
    pub fn tag(&self, reference: &Reference, manifest: &Digest) -> Result<ImageRecord> {
        let m = self.manifest(manifest)?;
        let config = Digest::parse(m.config().digest().as_ref())?;
        let cfg = self.config(&config)?;
        let diff_ids = cfg.rootfs().diff_ids();
        if diff_ids.len() != m.layers().len() {
            return Err(ImageError::Invalid {
                what: format!("image {}", reference.canonical()),
                reason: format!(
                    "{} layers in the manifest but {} diff_ids in the config",
                    m.layers().len(),
                    diff_ids.len()
                ),
            });
        }
        let mut layers = Vec::new();
        let mut size = 0;
        for (l, diff) in m.layers().iter().zip(diff_ids) {
            let blob = Digest::parse(l.digest().as_ref())?;
            if !self.has_blob(&blob) {
                return Err(ImageError::MissingBlob(blob));
            }
            size += l.size();
            layers.push((blob, Digest::parse(diff)?));
        }
        let mut name_ref = reference.clone();
        name_ref.digest = None;
        let record = ImageRecord {
            name: name_ref.canonical(),
            manifest: manifest.clone(),
            config,
            layers,
            size,
            created: crate::container::now_rfc3339(),
        };
        let _lock = self.lock()?;
        let mut idx = self.load_index()?;
        idx.images.retain(|r| r.name != record.name);
        idx.images.push(record.clone());
        self.save_index(&idx)?;
        Ok(record)
    }

    /// Every tagged image.
    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        Ok(self.load_index()?.images)
    }

    /// Finds an image by name (`busybox`, `busybox:1.36`, a full name) or by id prefix.
    pub fn resolve(&self, name: &str) -> Result<ImageRecord> {
        let images = self.list()?;
        let id = name.strip_prefix("sha256:").unwrap_or(name);
        let looks_like_id = id.len() >= 4 && id.bytes().all(|b| b.is_ascii_hexdigit());
        let parsed = Reference::parse(name);
        if let (Err(e), false) = (&parsed, looks_like_id) {
            return Err(ImageError::Reference(BadReference(e.0.clone(), e.1)));
        }
        if let Ok(r) = parsed {
            let want = r.canonical();
            if let Some(i) = images.iter().find(|i| i.name == want) {
                return Ok(i.clone());
            }
            if let Some(d) = &r.digest {
                if let Some(i) = images.iter().find(|i| &i.manifest == d) {
                    return Ok(i.clone());
                }
            }
        }
        if looks_like_id {
            let hits: Vec<&ImageRecord> = images
                .iter()
                .filter(|i| i.config.hex().starts_with(id) || i.manifest.hex().starts_with(id))
                .collect();
            if let Some(first) = hits.first() {
                return Ok((*first).clone());
            }
        }
        Err(ImageError::UnknownImage(name.to_string()))
    }

    /// Removes an image's tag. Blobs stay until [`ImageStore::prune`].
    pub fn untag(&self, name: &str) -> Result<ImageRecord> {
        let record = self.resolve(name)?;
        let _lock = self.lock()?;
        let mut idx = self.load_index()?;
        idx.images.retain(|r| r.name != record.name);
        self.save_index(&idx)?;
        Ok(record)
    }

    /// The unpacked directory of a layer (by diff id).
    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers").join(diff_id.hex())
    }

    /// Unpacks the image's layers that are not unpacked yet (verifying each against its diff
    /// id) and returns their directories, bottom first.
    pub fn unpack_layers(&self, image: &ImageRecord) -> Result<Vec<PathBuf>> {
        let mut dirs = Vec::new();
        for (blob, diff) in &image.layers {
            let dir = self.layer_dir(diff);
            if !dir.is_dir() {
                let _lock = self.lock()?;
                if !dir.is_dir() {
                    self.unpack_one(blob, diff, &dir)?;
                }
            }
            dirs.push(dir);
        }
        Ok(dirs)
    }

    fn unpack_one(&self, blob: &Digest, diff: &Digest, dir: &Path) -> Result<()> {
        let p = self.blob_path(blob);
        let f = fs::File::open(&p).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ImageError::MissingBlob(blob.clone()),
            _ => ImageError::Io {
                what: "open layer",
                path: p.clone(),
                source: e,
            },
        })?;
        let tmp = self.tmp_path("layer");
        fs::create_dir(&tmp).map_err(super::io_err("create", &tmp))?;
        let result = (|| {
            let mut blob_hash = HashingReader::new(f);
            let mut tar_hash = HashingReader::new(
                layer::decompress(&mut blob_hash).map_err(super::io_err("read", &p))?,
            );
            layer::unpack(&mut tar_hash, &tmp)?;
            std::io::copy(&mut tar_hash, &mut std::io::sink())
                .map_err(super::io_err("read", &p))?;
            let got = tar_hash.digest();
            if got != *diff {
                return Err(ImageError::DigestMismatch {
                    what: format!("layer {blob} (uncompressed)"),
                    expected: diff.clone(),
                    actual: got,
                });
            }
            std::io::copy(&mut blob_hash, &mut std::io::sink())
                .map_err(super::io_err("read", &p))?;
            let got = blob_hash.digest();
            if got != *blob {
                return Err(ImageError::DigestMismatch {
                    what: format!("layer blob {}", p.display()),
                    expected: blob.clone(),
                    actual: got,
                });
            }
            fs::rename(&tmp, dir).map_err(super::io_err("store layer", dir))
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result
    }

    /// Removes blobs and unpacked layers that no tagged image and no container uses. Returns
    /// how many entries and bytes were freed.
    pub fn prune(&self, layers_in_use: &[PathBuf]) -> Result<(usize, u64)> {
        let _lock = self.lock()?;
        let idx = self.load_index()?;
        let mut keep_blobs = std::collections::HashSet::new();
        let mut keep_layers: std::collections::HashSet<PathBuf> =
            layers_in_use.iter().cloned().collect();
        for i in &idx.images {
            keep_blobs.insert(i.manifest.hex().to_string());
            keep_blobs.insert(i.config.hex().to_string());
            for (b, d) in &i.layers {
                keep_blobs.insert(b.hex().to_string());
                keep_layers.insert(self.layer_dir(d));
            }
        }
        let (mut n, mut bytes) = (0, 0);
        let blobs = self.root.join("blobs/sha256");
        for e in fs::read_dir(&blobs)
            .map_err(super::io_err("read", &blobs))?
            .flatten()
        {
            if !keep_blobs.contains(&*e.file_name().to_string_lossy()) {
                bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
                fs::remove_file(e.path()).map_err(super::io_err("remove", &e.path()))?;
                n += 1;
            }
        }
        let layers = self.root.join("layers");
        for e in fs::read_dir(&layers)
            .map_err(super::io_err("read", &layers))?
            .flatten()
        {
            if !keep_layers.contains(&e.path()) {
                fs::remove_dir_all(e.path()).map_err(super::io_err("remove", &e.path()))?;
                n += 1;
            }
        }
        // Temporary files of crashed runs (an hour old: never one still being written).
        let tmp = self.root.join("tmp");
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for e in fs::read_dir(&tmp)
            .map_err(super::io_err("read", &tmp))?
            .flatten()
        {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < hour_ago);
            if old {
                let _ = fs::remove_dir_all(e.path()).or_else(|_| fs::remove_file(e.path()));
            }
        }
        Ok((n, bytes))
    }
}
