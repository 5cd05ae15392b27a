//! Per-container overlay snapshots: the image's unpacked layers (shared, read-only) as
//! `lowerdir`, a private `upper` and `work`, and an empty `rootfs` directory where the
//! container's init mounts the overlay inside its own mount namespace (the host's mounts are
//! never touched). `containers/<name>/snapshot.json` records the layers in use.

use std::fs;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::store::{ImageError, ImageStore};

/// A container's snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// `containers/<name>`.
    pub dir: PathBuf,
    /// Layer directories, bottom first.
    pub layers: Vec<PathBuf>,
    /// The image it was made from.
    pub image: String,
}

impl Snapshot {
    /// Makes a new snapshot `name` over `layers` (bottom first).
    pub fn create(
        store: &ImageStore,
        name: &str,
        image: &str,
        layers: Vec<PathBuf>,
    ) -> Result<Snapshot, ImageError> {
        let dir = store.root().join("containers").join(name);
        fs::create_dir(&dir).map_err(super::io_err("create snapshot", &dir))?;
        let snap = Snapshot {
            dir: dir.clone(),
            layers,
            image: image.to_string(),
        };
        let result = (|| {
            for d in ["upper", "work", "rootfs"] {
                fs::create_dir(dir.join(d)).map_err(super::io_err("create", &dir))?;
            }
            let meta = serde_json::to_vec_pretty(&snap).map_err(|e| ImageError::Invalid {
                what: "snapshot".into(),
                reason: e.to_string(),
            })?;
            fs::write(dir.join("snapshot.json"), meta).map_err(super::io_err("write", &dir))
        })();
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
        Ok(snap)
    }

    /// Opens an existing snapshot.
    pub fn open(store: &ImageStore, name: &str) -> Result<Snapshot, ImageError> {
        let p = store
            .root()
            .join("containers")
            .join(name)
            .join("snapshot.json");
        let data = fs::read(&p).map_err(super::io_err("read", &p))?;
        serde_json::from_slice(&data).map_err(|e| ImageError::Invalid {
            what: p.display().to_string(),
            reason: e.to_string(),
        })
    }

    /// Every snapshot in the store.
    pub fn list(store: &ImageStore) -> Vec<Snapshot> {
        let dir = store.root().join("containers");
        fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| Snapshot::open(store, &e.file_name().to_string_lossy()).ok())
            .collect()
    }

    /// The directory the overlay is mounted on (the bundle's `root.path`).
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// The overlayfs mount data: layers top first as `lowerdir`, plus upper and work.
    pub fn overlay_data(&self) -> String {
        let lower: Vec<String> = self
            .layers
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect();
        format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            self.dir.join("upper").display(),
            self.dir.join("work").display()
        )
    }

    /// Deletes the snapshot and everything the container wrote.
    pub fn remove(&self) -> Result<(), ImageError> {
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ImageError::Io {
                what: "remove snapshot",
                path: self.dir.clone(),
                source: e,
            }),
        }
    }
}
