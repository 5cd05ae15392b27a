//! Host tier: image layers from hostile or broken archives never write outside the layer
//! directory, and a corrupt or truncated blob is refused with nothing half-stored.

use std::fs;
use std::io::Write;
use std::path::Path;

use podlet_runtime::image::layer;
use podlet_runtime::image::{Digest, ImageStore, Reference};

/// A tar entry written by hand, so the archive can say what a well-behaved tool never would.
fn raw_entry(out: &mut Vec<u8>, path: &str, kind: u8, link: &str, data: &[u8]) {
    let mut h = [0u8; 512];
    h[..path.len()].copy_from_slice(path.as_bytes());
    h[100..107].copy_from_slice(b"0000644");
    h[108..115].copy_from_slice(b"0000000");
    h[116..123].copy_from_slice(b"0000000");
    h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
    h[136..147].copy_from_slice(b"00000000000");
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    if kind == b'3' || kind == b'4' {
        h[329..336].copy_from_slice(b"0000001");
        h[337..344].copy_from_slice(b"0000003");
    }
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| *b as u32).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn finish(mut t: Vec<u8>) -> Vec<u8> {
    t.extend_from_slice(&[0u8; 1024]);
    t
}

/// Everything under `dir`, as relative paths.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn hostile_entries_never_land_outside_the_layer() {
    let base = tempfile::tempdir().unwrap();
    let outside = base.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "dot-dot traversal",
            {
                let mut t = Vec::new();
                raw_entry(&mut t, "../outside/evil", b'0', "", b"x");
                finish(t)
            },
            true,
        ),
        (
            "symlink then write through it",
            {
                let mut t = Vec::new();
                raw_entry(&mut t, "link", b'2', outside.to_str().unwrap(), b"");
                raw_entry(&mut t, "link/evil", b'0', "", b"x");
                finish(t)
            },
            true,
        ),
        (
            "hard link to a host file",
            {
                let mut t = Vec::new();
                raw_entry(&mut t, "passwd", b'1', "/etc/passwd", b"");
                finish(t)
            },
            true,
        ),
        (
            "hard link climbing out",
            {
                let mut t = Vec::new();
                raw_entry(&mut t, "up", b'1', "../outside/x", b"");
                finish(t)
            },
            true,
        ),
        (
            "absolute path stays inside",
            {
                let mut t = Vec::new();
                raw_entry(&mut t, "/abs-file", b'0', "", b"inside");
                finish(t)
            },
            false,
        ),
        (
            "device nodes are not created",
            {
                let mut t = Vec::new();
                raw_entry(&mut t, "dev-mem", b'3', "", b"");
                raw_entry(&mut t, "dev-sda", b'4', "", b"");
                finish(t)
            },
            false,
        ),
    ];
    for (name, tar, must_fail) in cases {
        let dest = base
            .path()
            .join(format!("layer-{}", name.replace(' ', "-")));
        fs::create_dir(&dest).unwrap();
        let r = layer::unpack(&tar[..], &dest);
        assert_eq!(r.is_err(), must_fail, "{name}: {r:?}");
        assert!(
            tree(&outside).is_empty(),
            "{name}: wrote outside: {:?}",
            tree(&outside)
        );
        match name {
            "absolute path stays inside" => {
                assert_eq!(fs::read_to_string(dest.join("abs-file")).unwrap(), "inside")
            }
            "device nodes are not created" => assert!(tree(&dest).is_empty(), "{:?}", tree(&dest)),
            _ => {}
        }
    }
    // The host file a hard link named is untouched.
    assert!(fs::read_to_string("/etc/passwd").unwrap().contains("root"));
}

#[test]
fn whiteouts_become_overlay_whiteouts() {
    let d = tempfile::tempdir().unwrap();
    let mut t = Vec::new();
    raw_entry(&mut t, "dir/", b'5', "", b"");
    raw_entry(&mut t, "dir/.wh..wh..opq", b'0', "", b"");
    raw_entry(&mut t, ".wh.gone", b'0', "", b"");
    layer::unpack(&finish(t)[..], d.path()).unwrap();
    use std::os::unix::fs::FileTypeExt;
    let gone = fs::symlink_metadata(d.path().join("gone")).unwrap();
    assert!(
        gone.file_type().is_char_device(),
        "whiteout is a 0:0 char device"
    );
    let mut buf = [0u8; 8];
    let path = std::ffi::CString::new(d.path().join("dir").to_str().unwrap()).unwrap();
    // SAFETY: valid C strings and a live buffer.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    assert_eq!(n, 1);
    assert_eq!(buf[0], b'y');
}

#[test]
fn corrupt_or_truncated_content_is_refused_and_nothing_is_stored() {
    let d = tempfile::tempdir().unwrap();
    let store = ImageStore::open(d.path()).unwrap();
    let data = b"some blob".to_vec();
    let wrong = Digest::of(b"other");
    assert!(store.put_blob(&data[..], Some(&wrong)).is_err());
    assert!(!store.has_blob(&Digest::of(&data)));
    assert!(tree(&d.path().join("tmp")).is_empty());
    // A stored blob that was tampered with is refused on read.
    let good = store.put_bytes(&data).unwrap();
    fs::write(store.blob_path(&good), b"tampered").unwrap();
    assert!(store.read_blob(&good).is_err());

    // A truncated rootfs tar is not imported.
    let mut t = Vec::new();
    raw_entry(&mut t, "file", b'0', "", &[b'a'; 2000]);
    t.truncate(700);
    let tar = d.path().join("trunc.tar");
    fs::File::create(&tar).unwrap().write_all(&t).unwrap();
    let before = tree(&d.path().join("blobs"));
    let r = podlet_runtime::image::import::import_rootfs_tar(
        &store,
        &tar,
        &Reference::parse("trunc:latest").unwrap(),
        None,
    );
    assert!(r.is_err(), "a truncated tar was imported");
    assert_eq!(
        tree(&d.path().join("blobs")),
        before,
        "something was stored"
    );
    assert!(store.list().unwrap().is_empty());
}

/// A whiteout hides one entry of its own directory: `.wh.`, `.wh..` and `.wh...` name the
/// directory itself or its parent and must be refused, deleting nothing.
#[test]
fn whiteouts_naming_the_directory_or_its_parent_are_refused() {
    for (i, hostile) in [".wh...", "sub/.wh..", "sub/.wh.", "sub/.wh..."]
        .iter()
        .enumerate()
    {
        let base = tempfile::tempdir().unwrap();
        fs::write(base.path().join("sentinel"), "keep").unwrap();
        let dest = base.path().join("layer");
        fs::create_dir_all(dest.join("sub")).unwrap();
        fs::write(dest.join("sub/keep"), "keep").unwrap();
        let mut t = Vec::new();
        raw_entry(&mut t, hostile, b'0', "", b"");
        let r = layer::unpack(&finish(t)[..], &dest);
        assert!(r.is_err(), "case {i} {hostile:?} was accepted");
        assert!(
            base.path().join("sentinel").exists() && dest.join("sub/keep").exists(),
            "case {i} {hostile:?} deleted something: {:?}",
            tree(base.path())
        );
    }
}
