//! A pod's volumes as host directories under `<data dir>/pods/<uid>/volumes/<name>`, bind
//! mounted into its containers: `emptyDir`, `hostPath`, and the ones made of files —
//! `configMap`, `secret`, `downwardAPI`, `projected` — written like kubelet's atomic writer:
//! the files live in a timestamped `..<time>` directory, `..data` is a symlink to it that is
//! swapped with a rename, and each visible name is a symlink into `..data`. A running
//! container therefore sees a ConfigMap update all at once, without a restart. A
//! `medium: Memory` emptyDir is a tmpfs mounted there (and unmounted at teardown); the pod's
//! `fsGroup` owns the volumes kubelet manages ownership of.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, KeyToPath, Pod, Volume};

use super::convert::field_value;
use super::refs::{Data, Refs};

/// A file of a volume: its bytes and mode.
pub type Files = BTreeMap<String, (Vec<u8>, u32)>;

/// Where the pod's volumes live on the host.
pub fn pod_dir(data_dir: &Path, uid: &str) -> PathBuf {
    data_dir.join("pods").join(uid)
}

fn check_rel(path: &str) -> Result<(), String> {
    let p = Path::new(path);
    let ok = !path.is_empty()
        && p.components().all(|c| matches!(c, Component::Normal(_)))
        && !path.starts_with("..");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "volume file path {path:?} must be relative, without '..'"
        ))
    }
}

/// The files a ConfigMap/Secret volume shows: every key, or only `items` (each mapped to
/// its path), with `default_mode` unless an item has its own.
fn keyed_files(
    what: &str,
    data: &Data,
    items: Option<&Vec<KeyToPath>>,
    default_mode: u32,
) -> Result<Files, String> {
    let mut out = Files::new();
    match items {
        Some(items) => {
            for it in items {
                let v = data
                    .get(&it.key)
                    .ok_or_else(|| format!("{what} has no key {:?}", it.key))?;
                check_rel(&it.path)?;
                let mode = it.mode.map(|m| m as u32).unwrap_or(default_mode);
                out.insert(it.path.clone(), (v.clone(), mode));
            }
        }
        None => {
            for (k, v) in data {
                check_rel(k)?;
                out.insert(k.clone(), (v.clone(), default_mode));
            }
        }
    }
    Ok(out)
}

/// The files of a ConfigMap or Secret source (`kind` names it in errors); none when it is
/// missing and optional.
fn keyed_source(
    kind: &str,
    name: &str,
    found: Option<&Option<Data>>,
    optional: bool,
    items: Option<&Vec<KeyToPath>>,
    mode: u32,
) -> Result<Files, String> {
    match found {
        Some(Some(d)) => keyed_files(&format!("{kind} {name:?}"), d, items, mode),
        _ if optional => Ok(Files::new()),
        _ => Err(format!("{kind} {name:?} not found")),
    }
}

/// The files of downward-API items.
fn downward_files(
    items: Option<&Vec<DownwardAPIVolumeFile>>,
    default_mode: u32,
    pod: &Pod,
    pod_ip: &str,
    host_ip: &str,
) -> Result<Files, String> {
    let mut out = Files::new();
    for it in items.into_iter().flatten() {
        check_rel(&it.path)?;
        let Some(f) = &it.field_ref else {
            return Err(format!(
                "downwardAPI item {:?}: only fieldRef is supported",
                it.path
            ));
        };
        let value = field_value(pod, &f.field_path, pod_ip, host_ip)
            .ok_or_else(|| format!("unsupported fieldPath {:?}", f.field_path))?;
        let m = it.mode.map(|m| m as u32).unwrap_or(default_mode);
        out.insert(it.path.clone(), (value.into_bytes(), m));
    }
    Ok(out)
}

/// The files of a file-backed volume (`None` for emptyDir/hostPath/unsupported types).
pub fn volume_files(
    v: &Volume,
    pod: &Pod,
    refs: &Refs,
    pod_ip: &str,
    host_ip: &str,
) -> Option<Result<Files, String>> {
    let mode = |m: Option<i32>| m.map(|m| m as u32).unwrap_or(0o644);
    let cms = &refs.config_maps;
    let secrets = &refs.secrets;
    if let Some(cm) = &v.config_map {
        let optional = cm.optional == Some(true);
        let (items, m) = (cm.items.as_ref(), mode(cm.default_mode));
        return Some(keyed_source(
            "configmap",
            &cm.name,
            cms.get(&cm.name),
            optional,
            items,
            m,
        ));
    }
    if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let optional = s.optional == Some(true);
        let (items, m) = (s.items.as_ref(), mode(s.default_mode));
        return Some(keyed_source(
            "secret",
            &name,
            secrets.get(&name),
            optional,
            items,
            m,
        ));
    }
    if let Some(d) = &v.downward_api {
        return Some(downward_files(
            d.items.as_ref(),
            mode(d.default_mode),
            pod,
            pod_ip,
            host_ip,
        ));
    }
    let p = v.projected.as_ref()?;
    Some((|| {
        let mut out = Files::new();
        let dm = mode(p.default_mode);
        for src in p.sources.iter().flatten() {
            if let Some(cm) = &src.config_map {
                let optional = cm.optional == Some(true);
                out.extend(keyed_source(
                    "configmap",
                    &cm.name,
                    cms.get(&cm.name),
                    optional,
                    cm.items.as_ref(),
                    dm,
                )?);
            }
            if let Some(s) = &src.secret {
                let optional = s.optional == Some(true);
                out.extend(keyed_source(
                    "secret",
                    &s.name,
                    secrets.get(&s.name),
                    optional,
                    s.items.as_ref(),
                    dm,
                )?);
            }
            if let Some(d) = &src.downward_api {
                out.extend(downward_files(d.items.as_ref(), dm, pod, pod_ip, host_ip)?);
            }
            if src.service_account_token.is_some() {
                return Err("projected serviceAccountToken: the master cannot mint service account tokens yet".into());
            }
        }
        Ok(out)
    })())
}

fn io_msg(what: &str, path: &Path, e: std::io::Error) -> String {
    format!("{what} {}: {e}", path.display())
}

/// The files currently published in `dir` (through `..data`), if any.
fn current_files(dir: &Path) -> Option<Files> {
    let data = dir.join("..data");
    let target = std::fs::read_link(&data).ok()?;
    let root = dir.join(target);
    let mut out = Files::new();
    fn walk(root: &Path, rel: &Path, out: &mut Files) -> std::io::Result<()> {
        for e in std::fs::read_dir(root.join(rel))? {
            let e = e?;
            let r = rel.join(e.file_name());
            if e.file_type()?.is_dir() {
                walk(root, &r, out)?;
            } else {
                let bytes = std::fs::read(root.join(&r))?;
                let mode = e.metadata()?.permissions().mode() & 0o7777;
                out.insert(r.to_string_lossy().into_owned(), (bytes, mode));
            }
        }
        Ok(())
    }
    walk(&root, Path::new(""), &mut out).ok()?;
    Some(out)
}

/// Publishes `files` in `dir` atomically; returns whether anything changed.
pub fn write_atomic(dir: &Path, files: &Files) -> Result<bool, String> {
    if current_files(dir).as_ref() == Some(files) {
        return Ok(false);
    }
    std::fs::create_dir_all(dir).map_err(|e| io_msg("create", dir, e))?;
    let stamp = format!(
        "..{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let new = dir.join(&stamp);
    std::fs::create_dir(&new).map_err(|e| io_msg("create", &new, e))?;
    for (rel, (bytes, mode)) in files {
        check_rel(rel)?;
        let path = new.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_msg("create", parent, e))?;
        }
        std::fs::write(&path, bytes).map_err(|e| io_msg("write", &path, e))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode))
            .map_err(|e| io_msg("chmod", &path, e))?;
    }
    let old = std::fs::read_link(dir.join("..data")).ok();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp).map_err(|e| io_msg("symlink", &tmp, e))?;
    std::fs::rename(&tmp, dir.join("..data")).map_err(|e| io_msg("rename", &tmp, e))?;
    // Visible names: one symlink per top-level entry into ..data; stale ones go.
    let tops: std::collections::BTreeSet<String> = files
        .keys()
        .filter_map(|k| k.split('/').next().map(String::from))
        .collect();
    for top in &tops {
        let link = dir.join(top);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{top}"), &link)
                .map_err(|e| io_msg("symlink", &link, e))?;
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("..") && !tops.contains(&name) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    if let Some(old) = old {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(true)
}

/// Mounts a tmpfs (`emptyDir.medium: Memory`) on `dir` unless one is there already (an agent
/// restarted over a running pod), `nodev,nosuid`, of `size` bytes when given.
fn mount_tmpfs(dir: &Path, size: Option<u64>) -> Result<(), String> {
    if is_mount_point(dir) {
        return Ok(());
    }
    let data = size
        .map(|s| format!("size={s},mode=0777"))
        .unwrap_or_else(|| "mode=0777".into());
    nix::mount::mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NODEV | nix::mount::MsFlags::MS_NOSUID,
        Some(data.as_str()),
    )
    .map_err(|e| format!("mount tmpfs on {}: {e}", dir.display()))
}

/// Whether `dir` is a mount point (another device than its parent's).
fn is_mount_point(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(d), Some(Ok(p))) = (
        std::fs::symlink_metadata(dir),
        dir.parent().map(std::fs::symlink_metadata),
    ) else {
        return false;
    };
    d.dev() != p.dev()
}

/// Unmounts every mount below `dir` (memory-backed emptyDirs), deepest first, so that the
/// pod's directory can be removed. Only mounts this agent's namespace sees under `dir`.
pub fn unmount_below(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(podlet_runtime::cgroups::unescape_mountinfo(p)))
        .filter(|p| p.starts_with(dir) && p != dir)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        if let Err(e) = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH) {
            tracing::warn!(path = %p.display(), error = %e, "unmounting a pod volume");
        }
    }
}

/// Kubelet's volume ownership for `fsGroup`: every entry below `dir` (not following
/// symlinks) gets group `gid`, directories the setgid bit and group rwx, files group rw
/// (`read_only`: group r only). Skipped when `dir` already has the group and setgid bit
/// (kubelet's `OnRootMismatch`; new files inherit both).
fn set_ownership(dir: &Path, gid: u32, read_only: bool) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(dir).map_err(|e| io_msg("stat", dir, e))?;
    if !read_only && meta.gid() == gid && meta.mode() & 0o2000 != 0 {
        return Ok(());
    }
    fn walk(p: &Path, gid: u32, read_only: bool) -> Result<(), String> {
        let meta = std::fs::symlink_metadata(p).map_err(|e| io_msg("stat", p, e))?;
        std::os::unix::fs::lchown(p, None, Some(gid)).map_err(|e| io_msg("chown", p, e))?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            return Ok(());
        }
        let mode = meta.permissions().mode() & 0o7777;
        let mode = if ft.is_dir() {
            mode | 0o2000 | if read_only { 0o050 } else { 0o070 }
        } else {
            mode | if read_only { 0o040 } else { 0o060 }
        };
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
            .map_err(|e| io_msg("chmod", p, e))?;
        if ft.is_dir() {
            for e in std::fs::read_dir(p).map_err(|e| io_msg("read", p, e))? {
                let e = e.map_err(|e| io_msg("read", p, e))?;
                walk(&e.path(), gid, read_only)?;
            }
        }
        Ok(())
    }
    walk(dir, gid, read_only)
}

/// Makes (or refreshes) every volume of the pod; returns name → host path. An error names the
/// volume and the problem (reported as `CreateContainerConfigError`).
pub fn materialize(
    data_dir: &Path,
    pod: &Pod,
    refs: &Refs,
    pod_ip: &str,
    host_ip: &str,
) -> Result<BTreeMap<String, PathBuf>, String> {
    let uid = pod.metadata.uid.as_deref().unwrap_or("");
    let base = pod_dir(data_dir, uid).join("volumes");
    let mut out = BTreeMap::new();
    let Some(spec) = &pod.spec else {
        return Ok(out);
    };
    let fs_group = spec
        .security_context
        .as_ref()
        .and_then(|s| s.fs_group)
        .map(|g| g as u32);
    for v in spec.volumes.iter().flatten() {
        let ctx = |m: String| format!("volume {:?}: {m}", v.name);
        check_rel(&v.name).map_err(ctx)?;
        let dir = base.join(&v.name);
        if let Some(ed) = &v.empty_dir {
            std::fs::create_dir_all(&dir).map_err(|e| ctx(io_msg("create", &dir, e)))?;
            if ed.medium.as_deref() == Some("Memory") {
                let size = match &ed.size_limit {
                    Some(q) => Some(super::convert::quantity(&q.0).ok_or_else(|| {
                        ctx(format!("emptyDir sizeLimit {:?} is not a quantity", q.0))
                    })? as u64),
                    None => None,
                };
                mount_tmpfs(&dir, size).map_err(ctx)?;
            } else if let Some(m) = ed.medium.as_deref().filter(|m| !m.is_empty()) {
                return Err(ctx(format!(
                    "emptyDir medium {m:?} is not supported (\"\" or \"Memory\")"
                )));
            }
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
                .map_err(|e| ctx(io_msg("chmod", &dir, e)))?;
            if let Some(g) = fs_group {
                set_ownership(&dir, g, false).map_err(ctx)?;
            }
            out.insert(v.name.clone(), dir);
            continue;
        }
        if let Some(h) = &v.host_path {
            let path = PathBuf::from(&h.path);
            if !path.is_absolute() {
                return Err(ctx(format!("hostPath {:?} must be absolute", h.path)));
            }
            match h.type_.as_deref().unwrap_or("") {
                "" | "DirectoryOrCreate" => {
                    if !path.exists() {
                        std::fs::create_dir_all(&path)
                            .map_err(|e| ctx(io_msg("create", &path, e)))?;
                    }
                }
                "FileOrCreate" => {
                    if !path.exists() {
                        std::fs::write(&path, b"").map_err(|e| ctx(io_msg("create", &path, e)))?;
                    }
                }
                "Directory" if !path.is_dir() => {
                    return Err(ctx(format!("hostPath {:?} is not a directory", h.path)))
                }
                "File" if !path.is_file() => {
                    return Err(ctx(format!("hostPath {:?} is not a file", h.path)))
                }
                "Directory" | "File" | "Socket" | "CharDevice" | "BlockDevice" => {
                    if !path.exists() {
                        return Err(ctx(format!("hostPath {:?} does not exist", h.path)));
                    }
                }
                other => return Err(ctx(format!("hostPath type {other:?} is not supported"))),
            }
            out.insert(v.name.clone(), path);
            continue;
        }
        match volume_files(v, pod, refs, pod_ip, host_ip) {
            Some(files) => {
                let mut files = files.map_err(ctx)?;
                if fs_group.is_some() {
                    // Group-readable, as set_ownership leaves them: the next sync sees no change.
                    files.values_mut().for_each(|(_, mode)| *mode |= 0o040);
                }
                let changed = write_atomic(&dir, &files).map_err(ctx)?;
                if let (true, Some(g)) = (changed, fs_group) {
                    set_ownership(&dir, g, true).map_err(ctx)?;
                }
                out.insert(v.name.clone(), dir);
            }
            None => {
                return Err(ctx(
                    "this volume type is not supported by the podlet agent (use emptyDir, hostPath, configMap, secret, downwardAPI or projected)".into(),
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(pairs: &[(&str, &str)]) -> Files {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), (v.as_bytes().to_vec(), 0o644)))
            .collect()
    }

    #[test]
    fn updates_swap_the_data_link_and_keep_names_stable() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("cm");
        assert!(write_atomic(&dir, &files(&[("index.html", "v1"), ("a/b", "x")])).unwrap());
        assert_eq!(
            std::fs::read_to_string(dir.join("index.html")).unwrap(),
            "v1"
        );
        assert_eq!(std::fs::read_to_string(dir.join("a/b")).unwrap(), "x");
        let first = std::fs::read_link(dir.join("..data")).unwrap();
        assert!(!write_atomic(&dir, &files(&[("index.html", "v1"), ("a/b", "x")])).unwrap());
        assert!(write_atomic(&dir, &files(&[("index.html", "v2")])).unwrap());
        assert_eq!(
            std::fs::read_to_string(dir.join("index.html")).unwrap(),
            "v2"
        );
        assert!(!dir.join("a").exists(), "a removed key stays visible");
        assert!(
            !dir.join(first).exists(),
            "the old data directory is left behind"
        );
        assert_eq!(
            std::fs::read_link(dir.join("index.html")).unwrap(),
            Path::new("..data/index.html")
        );
    }

    #[test]
    fn hostile_paths_are_refused() {
        let d = tempfile::tempdir().unwrap();
        for bad in ["../x", "/etc/passwd", "a/../../b", "..data"] {
            let err = write_atomic(&d.path().join("v"), &files(&[(bad, "x")])).unwrap_err();
            assert!(err.contains("relative"), "{bad}: {err}");
        }
    }

    #[test]
    fn config_map_items_and_missing_sources() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "uid": "u1"},
            "spec": {"containers": [], "volumes": [
                {"name": "page", "configMap": {"name": "site", "items": [{"key": "html", "path": "index.html"}]}},
                {"name": "opt", "secret": {"secretName": "gone", "optional": true}},
                {"name": "scratch", "emptyDir": {}}]}
        }))
        .unwrap();
        let mut refs = Refs::default();
        refs.config_maps.insert(
            "site".into(),
            Some([("html".to_string(), b"<h1>hi</h1>".to_vec())].into()),
        );
        refs.secrets.insert("gone".into(), None);
        let d = tempfile::tempdir().unwrap();
        let made = materialize(d.path(), &pod, &refs, "10.42.0.5", "10.0.0.1").unwrap();
        assert_eq!(
            std::fs::read_to_string(made["page"].join("index.html")).unwrap(),
            "<h1>hi</h1>"
        );
        assert!(made["scratch"].is_dir());
        refs.config_maps.insert("site".into(), None);
        let err = materialize(d.path(), &pod, &refs, "", "").unwrap_err();
        assert!(
            err.contains("volume \"page\"") && err.contains("not found"),
            "{err}"
        );
    }
}
