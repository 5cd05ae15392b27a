//! Which pod a container belongs to (`containers/<name>/pod.json`), and leaving it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::EngineError;
use crate::pod::{PodError, Pods};

/// A container's pod.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Membership {
    /// The pod's name.
    pub pod: String,
    /// Created for this one container (`podlet run --network bridge`): removed with it.
    pub implicit: bool,
}

/// Records that the container whose snapshot is `dir` belongs to `m.pod`.
pub fn record(dir: &Path, m: &Membership) -> Result<(), EngineError> {
    let path = dir.join("pod.json");
    let data = serde_json::to_vec(m).map_err(|e| EngineError::Invalid(e.to_string()))?;
    std::fs::write(&path, data).map_err(|source| EngineError::Io {
        what: "record pod membership",
        path,
        source,
    })
}

/// The pod a container's snapshot directory belongs to, if any.
pub fn of(dir: &Path) -> Option<Membership> {
    serde_json::from_slice(&std::fs::read(dir.join("pod.json")).ok()?).ok()
}

/// Takes the container `id` out of its pod; an implicit pod is removed with it (network
/// released). Called when the container is removed.
pub fn leave(state: &Path, dir: &Path, id: &str) -> Result<(), EngineError> {
    let Some(m) = of(dir) else {
        return Ok(());
    };
    let pods = Pods::new(state);
    let result = if m.implicit {
        pods.remove(&m.pod)
    } else {
        pods.remove_container(&m.pod, id)
    };
    match result {
        Ok(()) | Err(PodError::NotFound(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
