//! Getting images into the store without a registry: a plain rootfs tar
//! (`podlet image import`), an OCI image layout (directory or tar, as skopeo, buildah and
//! `podman save --format oci-*` write it) and a `docker save` archive (`podlet image load`).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::digest::{Digest, HashingReader};
use super::layer;
use super::reference::Reference;
use super::store::{ImageError, ImageRecord, ImageStore};

type Result<T> = std::result::Result<T, ImageError>;

const MANIFEST_MT: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_MT: &str = "application/vnd.oci.image.config.v1+json";

fn invalid(what: impl Into<String>, reason: impl Into<String>) -> ImageError {
    ImageError::Invalid {
        what: what.into(),
        reason: reason.into(),
    }
}

/// Refuses what is not a regular file: an import reads to the end, and a device, FIFO or
/// socket (`/dev/zero`) never ends.
fn regular_file(path: &Path) -> Result<()> {
    let md = fs::metadata(path).map_err(super::io_err("open", path))?;
    if md.is_file() {
        Ok(())
    } else {
        Err(invalid(
            path.display().to_string(),
            "not a regular file (give a tar archive or an OCI layout directory)",
        ))
    }
}

/// The media type of a layer blob, from its first bytes.
fn layer_media_type(path: &Path) -> Result<&'static str> {
    let mut head = [0u8; 4];
    let mut f = fs::File::open(path).map_err(super::io_err("open", path))?;
    let n = f.read(&mut head).map_err(super::io_err("read", path))?;
    Ok(if head[..n].starts_with(&[0x1f, 0x8b]) {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    } else if head[..n].starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        "application/vnd.oci.image.layer.v1.tar+zstd"
    } else {
        "application/vnd.oci.image.layer.v1.tar"
    })
}

/// The digest of a layer's uncompressed tar.
fn diff_id(path: &Path) -> Result<Digest> {
    let f = fs::File::open(path).map_err(super::io_err("open", path))?;
    let mut h = HashingReader::new(layer::decompress(f).map_err(super::io_err("read", path))?);
    std::io::copy(&mut h, &mut std::io::sink()).map_err(super::io_err("read", path))?;
    Ok(h.digest())
}

/// Stores a manifest and config for `layers` (blob, diff id, size, media type) and tags it.
fn store_image(
    store: &ImageStore,
    reference: &Reference,
    config: Value,
    layers: &[(Digest, Digest, u64, &str)],
) -> Result<ImageRecord> {
    let config_bytes = serde_json::to_vec(&config).map_err(|e| invalid("config", e.to_string()))?;
    let config_digest = store.put_bytes(&config_bytes)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MT,
        "config": {"mediaType": CONFIG_MT, "digest": config_digest.as_str(), "size": config_bytes.len()},
        "layers": layers.iter().map(|(b, _, size, mt)| json!({"mediaType": mt, "digest": b.as_str(), "size": size})).collect::<Vec<_>>(),
    });
    let manifest_bytes =
        serde_json::to_vec(&manifest).map_err(|e| invalid("manifest", e.to_string()))?;
    let manifest_digest = store.put_bytes(&manifest_bytes)?;
    store.tag(reference, &manifest_digest)
}

/// `podlet image import rootfs.tar name:tag`: a plain root filesystem tar (optionally gzip
/// or zstd) as a one-layer image.
pub fn import_rootfs_tar(
    store: &ImageStore,
    tar: &Path,
    reference: &Reference,
    cmd: Option<Vec<String>>,
) -> Result<ImageRecord> {
    regular_file(tar)?;
    let mt = layer_media_type(tar)?;
    let diff = diff_id(tar)?;
    // A rootfs must be a tar: check by listing it before anything is stored.
    let f = fs::File::open(tar).map_err(super::io_err("open", tar))?;
    let mut archive = tar::Archive::new(layer::decompress(f).map_err(super::io_err("read", tar))?);
    let count = archive
        .entries()
        .and_then(|es| {
            es.map(|e| e.map(|_| ()))
                .collect::<std::io::Result<Vec<()>>>()
        })
        .map_err(|e| invalid(tar.display().to_string(), format!("not a tar archive: {e}")))?
        .len();
    if count == 0 {
        return Err(invalid(tar.display().to_string(), "empty archive"));
    }
    let f = fs::File::open(tar).map_err(super::io_err("open", tar))?;
    let (blob, size) = store.put_blob(f, None)?;
    let mut cfg = json!({
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
    });
    if let Some(c) = cmd {
        cfg["Cmd"] = json!(c);
    }
    let config = json!({
        "created": crate::container::now_rfc3339(),
        "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        "os": "linux",
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": [diff.as_str()]},
        "history": [{"created_by": format!("podlet image import {}", tar.display())}],
    });
    store_image(store, reference, config, &[(blob, diff, size, mt)])
}

/// Unpacks an archive of metadata and blobs (OCI layout tar, docker save) into a scratch
/// directory with the same safety rules as image layers.
fn unpack_archive(store: &ImageStore, archive: &Path) -> Result<PathBuf> {
    let dir = store
        .root()
        .join("tmp")
        .join(format!("archive-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(super::io_err("create", &dir))?;
    let f = fs::File::open(archive).map_err(super::io_err("open", archive))?;
    let r = layer::decompress(f).map_err(super::io_err("read", archive))?;
    if let Err(e) = layer::unpack(r, &dir) {
        let _ = fs::remove_dir_all(&dir);
        return Err(e.into());
    }
    Ok(dir)
}

/// The native platform in OCI terms.
fn native_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let data = fs::read(path).map_err(super::io_err("read", path))?;
    serde_json::from_slice(&data).map_err(|e| invalid(path.display().to_string(), e.to_string()))
}

/// Copies one blob from an OCI layout into the store, verifying it.
fn copy_layout_blob(store: &ImageStore, layout: &Path, d: &Digest) -> Result<()> {
    if store.has_blob(d) {
        return Ok(());
    }
    let p = layout.join("blobs/sha256").join(d.hex());
    let f = fs::File::open(&p).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ImageError::MissingBlob(d.clone()),
        _ => ImageError::Io {
            what: "open",
            path: p.clone(),
            source: e,
        },
    })?;
    store.put_blob(f, Some(d))?;
    Ok(())
}

fn digest_of(v: &Value, what: &str) -> Result<Digest> {
    let s = v["digest"]
        .as_str()
        .ok_or_else(|| invalid(what.to_string(), "descriptor without digest"))?;
    Ok(Digest::parse(s)?)
}

/// Imports every image of an OCI layout directory; `name` overrides the layout's ref name
/// (required when the layout has none).
pub fn import_oci_layout(
    store: &ImageStore,
    layout: &Path,
    name: Option<&Reference>,
) -> Result<Vec<ImageRecord>> {
    let marker = read_json(&layout.join("oci-layout"))?;
    if marker["imageLayoutVersion"].as_str().is_none() {
        return Err(invalid("oci-layout", "no imageLayoutVersion"));
    }
    let index = read_json(&layout.join("index.json"))?;
    let manifests = index["manifests"]
        .as_array()
        .ok_or_else(|| invalid("index.json", "no manifests"))?;
    let mut out = Vec::new();
    for m in manifests {
        let mut desc = m.clone();
        let mut d = digest_of(&desc, "index.json")?;
        // A manifest list: pick this machine's platform.
        if desc["mediaType"]
            .as_str()
            .is_some_and(|t| t.contains("index") || t.contains("manifest.list"))
        {
            copy_layout_blob(store, layout, &d)?;
            let list: Value = serde_json::from_slice(&store.read_blob(&d)?)
                .map_err(|e| invalid(format!("index {d}"), e.to_string()))?;
            let pick = list["manifests"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|x| {
                    x["platform"]["os"] == "linux" && x["platform"]["architecture"] == native_arch()
                })
                .ok_or_else(|| {
                    invalid(
                        format!("index {d}"),
                        format!("no linux/{} image", native_arch()),
                    )
                })?;
            desc["digest"] = pick["digest"].clone();
            d = digest_of(&desc, "index")?;
        }
        copy_layout_blob(store, layout, &d)?;
        let manifest: Value = serde_json::from_slice(&store.read_blob(&d)?)
            .map_err(|e| invalid(format!("manifest {d}"), e.to_string()))?;
        copy_layout_blob(
            store,
            layout,
            &digest_of(&manifest["config"], "manifest config")?,
        )?;
        for l in manifest["layers"].as_array().into_iter().flatten() {
            copy_layout_blob(store, layout, &digest_of(l, "manifest layer")?)?;
        }
        let reference = match (
            name,
            m["annotations"]["org.opencontainers.image.ref.name"].as_str(),
        ) {
            (Some(r), _) => r.clone(),
            (None, Some(tag)) => {
                // A bare tag ("latest") or a full reference.
                if tag.contains('/') || tag.contains(':') {
                    Reference::parse(tag)?
                } else {
                    Reference::parse(&format!("localhost/imported:{tag}"))?
                }
            }
            (None, None) => {
                return Err(invalid(
                    layout.display().to_string(),
                    "the layout names no image; give a name",
                ))
            }
        };
        out.push(store.tag(&reference, &d)?);
    }
    Ok(out)
}

/// Imports a `docker save` archive's images (its RepoTags, or `name`).
fn import_docker_dir(
    store: &ImageStore,
    dir: &Path,
    name: Option<&Reference>,
) -> Result<Vec<ImageRecord>> {
    let manifest = read_json(&dir.join("manifest.json"))?;
    let mut out = Vec::new();
    for entry in manifest.as_array().into_iter().flatten() {
        let config_file = entry["Config"]
            .as_str()
            .ok_or_else(|| invalid("manifest.json", "entry without Config"))?;
        let config_path = super::layer_path_in(dir, config_file)?;
        let config = read_json(&config_path)?;
        let diff_ids: Vec<Digest> = config["rootfs"]["diff_ids"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| Digest::parse(d.as_str().unwrap_or("")))
            .collect::<std::result::Result<_, _>>()?;
        let layer_files = entry["Layers"].as_array().cloned().unwrap_or_default();
        if layer_files.len() != diff_ids.len() {
            return Err(invalid(
                "manifest.json",
                "Layers and diff_ids differ in number",
            ));
        }
        let mut layers = Vec::new();
        for (lf, want) in layer_files.iter().zip(&diff_ids) {
            let p = super::layer_path_in(dir, lf.as_str().unwrap_or(""))?;
            let got = diff_id(&p)?;
            if got != *want {
                return Err(ImageError::DigestMismatch {
                    what: format!("layer {}", p.display()),
                    expected: want.clone(),
                    actual: got,
                });
            }
            let mt = layer_media_type(&p)?;
            let (blob, size) =
                store.put_blob(fs::File::open(&p).map_err(super::io_err("open", &p))?, None)?;
            layers.push((blob, got, size, mt));
        }
        let tags: Vec<Reference> = match name {
            Some(r) => vec![r.clone()],
            None => entry["RepoTags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str().and_then(|t| Reference::parse(t).ok()))
                .collect(),
        };
        if tags.is_empty() {
            return Err(invalid(
                "manifest.json",
                "image without RepoTags; give a name",
            ));
        }
        for t in &tags {
            out.push(store_image(store, t, config.clone(), &layers)?);
        }
    }
    Ok(out)
}

/// `podlet image load`: an OCI layout (directory or tar) or a `docker save` archive.
pub fn load(store: &ImageStore, path: &Path, name: Option<&Reference>) -> Result<Vec<ImageRecord>> {
    if path.is_dir() {
        return import_oci_layout(store, path, name);
    }
    regular_file(path)?;
    let dir = unpack_archive(store, path)?;
    let result = if dir.join("index.json").is_file() && dir.join("oci-layout").is_file() {
        import_oci_layout(store, &dir, name)
    } else if dir.join("manifest.json").is_file() {
        import_docker_dir(store, &dir, name)
    } else {
        Err(invalid(
            path.display().to_string(),
            "neither an OCI image layout nor a docker save archive",
        ))
    };
    let _ = fs::remove_dir_all(&dir);
    result
}
