//! Container state on disk: one directory per container under the runtime root.
//!
//! `<root>/<id>/state.json` holds [`ContainerState`]; the directory's creation is the lock that
//! makes container ids unique.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The default runtime root (like runc's `/run/runc`).
pub const DEFAULT_ROOT: &str = "/run/podlet-runc";

/// Errors about container state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The id has characters that could escape the root or confuse tools.
    #[error("invalid container id {0:?}: use 1-1024 characters from [A-Za-z0-9_.+-], not starting with '.'")]
    InvalidId(String),
    /// A container with this id exists already.
    #[error("container {0:?} already exists")]
    Exists(String),
    /// No container with this id.
    #[error("container {0:?} does not exist")]
    NotFound(String),
    /// Reading or writing state failed.
    #[error("container state {path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// state.json is corrupt.
    #[error("container state {path}: {detail}")]
    Corrupt {
        /// The file involved.
        path: PathBuf,
        /// The parser's message.
        detail: String,
    },
}

/// A container's lifecycle status, as the OCI runtime spec names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Being created.
    Creating,
    /// Created, waiting for `start`.
    Created,
    /// The user process runs.
    Running,
    /// Frozen by `pause`.
    Paused,
    /// The process has exited.
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        };
        f.pad(s)
    }
}

/// What podlet records about a container (a superset of runc's `state` output).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerState {
    /// OCI version of the bundle.
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    /// The container id.
    pub id: String,
    /// Last known status (refreshed from the process on read).
    pub status: Status,
    /// The init process's pid on the host (0 once stopped).
    pub pid: i32,
    /// The init process's start time (clock ticks since boot), to tell pid reuse apart.
    #[serde(rename = "pidStartTime", default)]
    pub pid_start_time: u64,
    /// The bundle directory.
    pub bundle: PathBuf,
    /// The root filesystem.
    pub rootfs: PathBuf,
    /// Creation time, RFC 3339.
    pub created: String,
    /// The owner (user name), as runc reports it.
    #[serde(default)]
    pub owner: String,
    /// Annotations from the bundle.
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
    /// Cgroup directories made for the container (one per hierarchy).
    #[serde(rename = "cgroupDirs", default)]
    pub cgroup_dirs: Vec<PathBuf>,
}

/// Checks that a container id is safe to use as a directory name.
pub fn validate_id(id: &str) -> Result<(), StateError> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '+' | '-'));
    if ok {
        Ok(())
    } else {
        Err(StateError::InvalidId(id.to_string()))
    }
}

/// The runtime's state root.
#[derive(Debug, Clone)]
pub struct StateRoot {
    dir: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl StateRoot {
    /// Uses `dir` as the root (created on first use, mode 0700).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StateRoot { dir: dir.into() }
    }

    /// The root directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A container's directory.
    pub fn container_dir(&self, id: &str) -> Result<PathBuf, StateError> {
        validate_id(id)?;
        Ok(self.dir.join(id))
    }

    /// Claims `id`: creates its directory, failing if it exists.
    pub fn claim(&self, id: &str) -> Result<PathBuf, StateError> {
        let dir = self.container_dir(id)?;
        fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let _ = fs::set_permissions(
            &self.dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        );
        match fs::create_dir(&dir) {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(StateError::Exists(id.to_string()))
            }
            Err(e) => Err(io(&dir)(e)),
        }
    }

    /// Writes state atomically (write to a temp file, then rename).
    pub fn save(&self, state: &ContainerState) -> Result<(), StateError> {
        let dir = self.container_dir(&state.id)?;
        let tmp = dir.join("state.json.tmp");
        let path = dir.join("state.json");
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        fs::write(&tmp, bytes).map_err(io(&tmp))?;
        fs::rename(&tmp, &path).map_err(io(&path))
    }

    /// Reads a container's saved state (without refreshing its status).
    pub fn load(&self, id: &str) -> Result<ContainerState, StateError> {
        let dir = self.container_dir(id)?;
        let path = dir.join("state.json");
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StateError::NotFound(id.to_string()))
            }
            Err(e) => return Err(io(&path)(e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
            path,
            detail: e.to_string(),
        })
    }

    /// Removes a container's directory and everything in it.
    pub fn remove(&self, id: &str) -> Result<(), StateError> {
        let dir = self.container_dir(id)?;
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&dir)(e)),
        }
    }

    /// Ids of every container with a state file.
    pub fn list(&self) -> Result<Vec<String>, StateError> {
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&self.dir)(e)),
        };
        let mut ids: Vec<String> = rd
            .flatten()
            .filter(|e| e.path().join("state.json").exists())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        ids.sort();
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_could_escape_are_refused() {
        for bad in ["", "..", "../x", "a/b", ".hidden", "a b", "x\0y"] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
        for good in ["abc", "a.b-c_d+1", "0123"] {
            validate_id(good).unwrap();
        }
    }

    #[test]
    fn claim_is_exclusive_and_state_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let root = StateRoot::new(d.path().join("root"));
        root.claim("c1").unwrap();
        assert!(matches!(root.claim("c1"), Err(StateError::Exists(_))));
        let st = ContainerState {
            oci_version: "1.2.0".into(),
            id: "c1".into(),
            status: Status::Created,
            pid: 42,
            pid_start_time: 7,
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: "2026-01-01T00:00:00Z".into(),
            owner: "root".into(),
            annotations: HashMap::new(),
            cgroup_dirs: vec![],
        };
        root.save(&st).unwrap();
        assert_eq!(root.load("c1").unwrap().pid, 42);
        assert_eq!(root.list().unwrap(), vec!["c1"]);
        root.remove("c1").unwrap();
        assert!(matches!(root.load("c1"), Err(StateError::NotFound(_))));
    }
}
