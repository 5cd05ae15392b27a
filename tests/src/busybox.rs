//! A busybox root filesystem from Debian's `busybox-static`, for container and image tests.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Makes `dir/bin/busybox` with a symlink per applet; returns `dir`.
pub fn rootfs(dir: &Path, applets: &[&str]) -> PathBuf {
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    fs::copy("/bin/busybox", bin.join("busybox")).expect("busybox-static installed");
    for a in applets {
        std::os::unix::fs::symlink("busybox", bin.join(a)).unwrap();
    }
    dir.to_path_buf()
}

/// Adds `/etc/passwd` (root, nobody) and `/tmp` to a root filesystem.
pub fn with_users(root: &Path) {
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::create_dir_all(root.join("tmp")).unwrap();
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
    )
    .unwrap();
}

/// Packs `root` into the tar `out` (gzip-compressed when `out` ends in `.gz`).
pub fn tar(root: &Path, out: &Path) -> PathBuf {
    let flags = if out.extension().is_some_and(|e| e == "gz") {
        "-czf"
    } else {
        "-cf"
    };
    let st = Command::new("tar")
        .arg("-C")
        .arg(root)
        .arg(flags)
        .arg(out)
        .arg(".")
        .status()
        .expect("tar installed");
    assert!(st.success(), "tar {}", out.display());
    out.to_path_buf()
}
