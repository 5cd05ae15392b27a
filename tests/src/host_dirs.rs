//! The machine-wide directories podman, skopeo and their libraries create on first use (even
//! with `--root`/`--runroot`/`--tmpdir` given): tests that run those tools remove the ones
//! they created.

use std::path::{Path, PathBuf};

/// Directories containers/storage and containers/image create for root.
pub const CONTAINER_TOOL_DIRS: &[&str] = &["/var/lib/containers", "/run/containers", "/run/libpod"];

/// Removes, on drop, each of [`CONTAINER_TOOL_DIRS`] that did not exist when it was made.
pub struct HostDirsGuard(Vec<(PathBuf, bool)>);

impl HostDirsGuard {
    /// Records which directories exist now.
    pub fn new() -> HostDirsGuard {
        HostDirsGuard(
            CONTAINER_TOOL_DIRS
                .iter()
                .map(|d| (PathBuf::from(d), Path::new(d).exists()))
                .collect(),
        )
    }
}

impl Default for HostDirsGuard {
    fn default() -> Self {
        HostDirsGuard::new()
    }
}

impl Drop for HostDirsGuard {
    fn drop(&mut self) {
        for (d, existed) in &self.0 {
            if !existed {
                let _ = std::fs::remove_dir_all(d);
            }
        }
    }
}
