//! Images: a content-addressed store of OCI blobs, layer unpacking, imports, and the
//! per-container overlay snapshots that `podlet run` starts containers from.

pub mod digest;
pub mod import;
pub mod layer;
pub mod reference;
pub mod registry;
pub mod snapshot;
pub mod store;

pub use digest::Digest;
pub use reference::Reference;
pub use store::{ImageError, ImageRecord, ImageStore};

/// A path named inside an unpacked archive, refusing anything that leaves it.
pub(crate) fn layer_path_in(
    dir: &std::path::Path,
    rel: &str,
) -> Result<std::path::PathBuf, ImageError> {
    let p = std::path::Path::new(rel);
    if rel.is_empty()
        || p.components().any(|c| {
            !matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        })
    {
        return Err(ImageError::Invalid {
            what: "archive".into(),
            reason: format!("path {rel:?} leaves the archive"),
        });
    }
    Ok(dir.join(p))
}

/// Maps an I/O error on `path` while doing `what` to [`ImageError::Io`].
pub(crate) fn io_err<'a>(
    what: &'static str,
    path: &'a std::path::Path,
) -> impl Fn(std::io::Error) -> ImageError + 'a {
    move |source| ImageError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}
