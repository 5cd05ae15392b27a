//! Image garbage collection by disk usage, like kubelet's image manager: when the filesystem
//! of the image store is at least `--image-gc-high-threshold` percent full, images that no
//! container on the node uses (running or exited) and no pod bound to it names, stored longer
//! ago than `--minimum-image-ttl-duration`, are removed, oldest first, until usage is at most
//! `--image-gc-low-threshold`; their blobs and unpacked layers go with them.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use podlet_runtime::engine::Engine;
use podlet_runtime::image::snapshot::Snapshot;

use crate::PodPolicy;

/// How often disk usage is checked.
pub const GC_PERIOD: Duration = Duration::from_secs(10);

/// Percent of the filesystem holding `path` in use (kubelet: capacity − available).
pub fn usage_percent(path: &Path) -> std::io::Result<f64> {
    let st = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    let total = st.blocks() as f64;
    if total == 0.0 {
        return Ok(0.0);
    }
    let available = st.blocks_available() as f64;
    Ok((total - available) * 100.0 / total)
}

/// What one collection did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Names of the images removed.
    pub removed: Vec<String>,
    /// Blob and layer entries freed.
    pub freed_entries: usize,
    /// Bytes freed.
    pub freed_bytes: u64,
}

/// One pass: nothing below `high` percent; otherwise unused images, oldest first, until
/// usage is at most `low` percent (`usage` measures it; a parameter so tests can script it).
pub fn collect(
    engine: &Engine,
    policy: &PodPolicy,
    wanted: &[String],
    usage: &mut dyn FnMut() -> f64,
) -> Result<GcReport, String> {
    let (high, low) = (policy.image_gc_high_percent, policy.image_gc_low_percent);
    let mut report = GcReport::default();
    if usage() < f64::from(high) {
        return Ok(report);
    }
    let store = engine.store();
    let snapshots = Snapshot::list(store);
    // The names pods use, as the store spells them (`busybox` → docker.io/library/busybox:latest).
    let named: Vec<String> = wanted
        .iter()
        .filter_map(|w| store.resolve(w).ok().map(|r| r.name))
        .collect();
    let young = |created: &str| {
        jiff::Timestamp::from_str(created).map_or(true, |t| {
            let age = jiff::Timestamp::now().duration_since(t);
            age.as_secs() < policy.image_min_age.as_secs() as i64
        })
    };
    let mut images = store.list().map_err(|e| e.to_string())?;
    images.retain(|i| {
        !snapshots.iter().any(|s| s.image == i.name)
            && !named.contains(&i.name)
            && !young(&i.created)
    });
    // RFC 3339 times of one format sort as text.
    images.sort_by(|a, b| a.created.cmp(&b.created));
    let in_use: Vec<std::path::PathBuf> = snapshots.into_iter().flat_map(|s| s.layers).collect();
    for image in images {
        if usage() <= f64::from(low) && !report.removed.is_empty() {
            break;
        }
        match store.untag(&image.name) {
            Ok(_) => {
                let (n, bytes) = store.prune(&in_use).map_err(|e| e.to_string())?;
                report.freed_entries += n;
                report.freed_bytes += bytes;
                report.removed.push(image.name);
            }
            Err(e) => tracing::warn!(image = %image.name, error = %e, "image gc: removing"),
        }
    }
    Ok(report)
}

/// The images of every pod on the node, by pod uid (kept by the pod workers).
pub type PodImages = Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<String>>>>;

/// Runs [`collect`] every [`GC_PERIOD`] on the blocking pool.
pub async fn run(engine: Arc<Engine>, policy: PodPolicy, pod_images: PodImages) {
    loop {
        tokio::time::sleep(GC_PERIOD).await;
        let e = engine.clone();
        let p = policy.clone();
        let wanted: Vec<String> = pod_images
            .lock()
            .map(|m| m.values().flatten().cloned().collect())
            .unwrap_or_default();
        let done = tokio::task::spawn_blocking(move || {
            let root = e.config().root.clone();
            let mut usage = || usage_percent(&root).unwrap_or(0.0);
            collect(&e, &p, &wanted, &mut usage)
        })
        .await;
        match done {
            Ok(Ok(r)) if !r.removed.is_empty() => tracing::info!(
                images = ?r.removed,
                freed_bytes = r.freed_bytes,
                "image gc: removed unused images"
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "image gc"),
            Err(e) => tracing::error!(error = %e, "image gc panicked"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_of_a_real_filesystem_is_a_percentage() {
        let u = usage_percent(Path::new("/")).unwrap();
        assert!((0.0..=100.0).contains(&u), "{u}");
    }
}
