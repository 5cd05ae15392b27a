//! Unpacking image layers (tar, gzip or zstd) into a directory, safely: nothing is written
//! outside it whatever the archive says (no `..`, no absolute paths, no writing through a
//! symlink, no hard link to anything outside), device nodes are never created, and OCI
//! whiteouts become overlayfs whiteouts (a 0:0 character device; `trusted.overlay.opaque`).

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// A layer that cannot be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// The archive is corrupt or truncated.
    #[error("layer archive: {0}")]
    Archive(std::io::Error),
    /// An entry tries to leave the layer directory.
    #[error("layer entry {path:?} escapes the layer ({why})")]
    Escape {
        /// The entry's path as written in the archive.
        path: String,
        /// How.
        why: &'static str,
    },
    /// Writing an entry failed.
    #[error("layer entry {path:?}: {source}")]
    Write {
        /// The entry's path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Wraps `r` in the decompressor its first bytes ask for (gzip, zstd, or none).
pub fn decompress<'a>(r: impl Read + 'a) -> std::io::Result<Box<dyn Read + 'a>> {
    let mut br = BufReader::with_capacity(64 * 1024, r);
    let head = br.fill_buf()?.to_vec();
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(br))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(br)?)
    } else {
        Box::new(br)
    })
}

/// The entry path as components relative to the layer root: `.` dropped, a leading `/`
/// dropped (as tar does), `..` refused.
fn relative(raw: &Path) -> Result<PathBuf, LayerError> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(LayerError::Escape {
                    path: raw.display().to_string(),
                    why: "\"..\" component",
                })
            }
        }
    }
    Ok(out)
}

/// Makes sure every existing ancestor of `rel` under `root` is a real directory (creating
/// missing ones): an earlier entry must not be able to redirect a later one via a symlink.
fn safe_parent(root: &Path, rel: &Path, raw: &str) -> Result<PathBuf, LayerError> {
    let mut cur = root.to_path_buf();
    if let Some(parent) = rel.parent() {
        for c in parent.components() {
            cur.push(c);
            match fs::symlink_metadata(&cur) {
                Ok(md) if md.is_dir() => {}
                Ok(md) if md.file_type().is_symlink() => {
                    return Err(LayerError::Escape {
                        path: raw.to_string(),
                        why: "a parent directory is a symlink",
                    })
                }
                Ok(_) => {
                    return Err(LayerError::Write {
                        path: raw.to_string(),
                        source: std::io::Error::other("a parent is not a directory"),
                    })
                }
                Err(_) => fs::create_dir(&cur).map_err(|source| LayerError::Write {
                    path: raw.to_string(),
                    source,
                })?,
            }
        }
    }
    Ok(root.join(rel))
}

/// Removes whatever is at `p` (not following symlinks), unless it is a directory and `keep_dir`.
fn clear(p: &Path, keep_dir: bool) -> std::io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(md) if md.is_dir() => {
            if keep_dir {
                Ok(())
            } else {
                fs::remove_dir_all(p)
            }
        }
        Ok(_) => fs::remove_file(p),
        Err(_) => Ok(()),
    }
}

/// Unpacks the (decompressed) tar stream `r` into `dest`.
pub fn unpack(r: impl Read, dest: &Path) -> Result<(), LayerError> {
    let mut archive = tar::Archive::new(r);
    let entries = archive.entries().map_err(LayerError::Archive)?;
    for entry in entries {
        let mut entry = entry.map_err(LayerError::Archive)?;
        let raw_path = entry.path().map_err(LayerError::Archive)?.into_owned();
        let raw = raw_path.display().to_string();
        let rel = relative(&raw_path)?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let w = |source: std::io::Error| LayerError::Write {
            path: raw.clone(),
            source,
        };
        let target = safe_parent(dest, &rel, &raw)?;
        let name = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // OCI whiteouts.
        if name == ".wh..wh..opq" {
            let dir = target.parent().unwrap_or(dest);
            xattr_set(dir, "trusted.overlay.opaque", b"y").map_err(w)?;
            continue;
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            // It hides one entry of its own directory: never the directory or its parent.
            if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.contains('/') {
                return Err(LayerError::Escape {
                    path: raw.clone(),
                    why: "a whiteout must name an entry of its own directory",
                });
            }
            let victim = target.with_file_name(hidden);
            clear(&victim, false).map_err(w)?;
            nix::sys::stat::mknod(
                &victim,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::empty(),
                0,
            )
            .map_err(|e| w(e.into()))?;
            continue;
        }
        let header = entry.header().clone();
        let mode = header.mode().map_err(LayerError::Archive)? & 0o7777;
        let uid = header.uid().ok().map(|u| u as u32);
        let gid = header.gid().ok().map(|g| g as u32);
        let kind = header.entry_type();
        match kind {
            tar::EntryType::Directory => {
                clear(&target, true).map_err(w)?;
                if !target.is_dir() {
                    fs::create_dir(&target).map_err(w)?;
                }
                fs::set_permissions(&target, fs::Permissions::from_mode(mode)).map_err(w)?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                clear(&target, false).map_err(w)?;
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&target)
                    .map_err(w)?;
                std::io::copy(&mut entry, &mut f).map_err(LayerError::Archive)?;
                // Set the mode after the owner: chown clears setuid bits.
                std::os::unix::fs::lchown(&target, uid, gid).map_err(w)?;
                fs::set_permissions(&target, fs::Permissions::from_mode(mode)).map_err(w)?;
                continue;
            }
            tar::EntryType::Symlink => {
                let to = header
                    .link_name()
                    .map_err(LayerError::Archive)?
                    .unwrap_or_default();
                clear(&target, false).map_err(w)?;
                // A symlink's target is resolved inside the container's root at run time;
                // unpacking never follows it (safe_parent refuses to write through one).
                symlink(&to, &target).map_err(w)?;
            }
            tar::EntryType::Link => {
                let to = header
                    .link_name()
                    .map_err(LayerError::Archive)?
                    .unwrap_or_default();
                let src_rel = relative(&to)?;
                let src = safe_parent(dest, &src_rel, &raw)?;
                match fs::symlink_metadata(&src) {
                    Ok(md) if !md.file_type().is_symlink() && !md.is_dir() => {}
                    _ => {
                        return Err(LayerError::Escape {
                            path: raw.clone(),
                            why: "hard link to something that is not a file in this layer",
                        })
                    }
                }
                clear(&target, false).map_err(w)?;
                fs::hard_link(&src, &target).map_err(w)?;
                continue;
            }
            tar::EntryType::Fifo => {
                clear(&target, false).map_err(w)?;
                nix::unistd::mkfifo(&target, nix::sys::stat::Mode::from_bits_truncate(mode))
                    .map_err(|e| w(e.into()))?;
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                tracing::warn!(path = %raw, "device node in image layer not created");
                continue;
            }
            _ => continue,
        }
        std::os::unix::fs::lchown(&target, uid, gid).map_err(w)?;
    }
    Ok(())
}

fn xattr_set(path: &Path, name: &str, value: &[u8]) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let n = std::ffi::CString::new(name).map_err(std::io::Error::other)?;
    // SAFETY: all pointers are valid NUL-terminated strings or a live byte slice.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
