//! Locating the workspace's built binaries from a test process.

use std::path::PathBuf;

/// The directory cargo put this test binary's sibling executables in (`target/<profile>`).
pub fn target_profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test binary has a parent dir");
    if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("deps has a parent").to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

/// Path of the workspace binary `name`; panics with a clear message if it was not built.
pub fn workspace_bin(name: &str) -> PathBuf {
    let path = target_profile_dir().join(name);
    assert!(
        path.is_file(),
        "{} not built: run `cargo build --workspace --bins` (make test does) before the tests",
        path.display()
    );
    path
}
