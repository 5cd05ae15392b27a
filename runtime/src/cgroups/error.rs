use std::path::PathBuf;

/// Errors from cgroup discovery and path resolution.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A line of `/proc/<pid>/cgroup` could not be parsed.
    #[error("malformed /proc/self/cgroup line {line}: {text:?}")]
    MalformedMembership {
        /// 1-based line number.
        line: usize,
        /// The offending text.
        text: String,
    },
    /// A line of `/proc/<pid>/mountinfo` could not be parsed.
    #[error("malformed mountinfo line {line}: {text:?}")]
    MalformedMountinfo {
        /// 1-based line number.
        line: usize,
        /// The offending text.
        text: String,
    },
    /// No mount was found for a hierarchy the process is a member of.
    #[error("cgroup hierarchy {hierarchy:?} is not mounted in this mount namespace")]
    HierarchyNotMounted {
        /// Controllers (or `cgroup2`) naming the hierarchy.
        hierarchy: String,
    },
    /// The process's cgroup lies outside what its mount of the hierarchy shows.
    #[error("own cgroup {cgroup} is not visible below mount root {mount_root}")]
    OwnCgroupNotVisible {
        /// The process's cgroup path.
        cgroup: PathBuf,
        /// The root of the hierarchy's mount.
        mount_root: PathBuf,
    },
    /// A requested cgroup root would leave the delegated subtree.
    #[error("cgroup root {requested}: must lie strictly below podlet's own cgroup {own} (rule: never leave the subtree podlet was started in)")]
    RootOutsideOwnSubtree {
        /// What was asked for.
        requested: PathBuf,
        /// The process's own cgroup in the offending hierarchy.
        own: PathBuf,
    },
    /// A path contained `..`, `.` or an otherwise unusable component.
    #[error("{what} {path:?}: only plain path components are allowed (no '..', '.', or empty)")]
    InvalidPath {
        /// Which input the path came from, e.g. `cgroupsPath`.
        what: &'static str,
        /// The offending path.
        path: String,
    },
    /// A resource limit was requested but no hierarchy below podlet's root offers its controller.
    #[error("linux.resources: {setting} needs the {controller} controller, which is not available below podlet's cgroup root (neither in cgroup v2 nor in a v1 hierarchy)")]
    ControllerUnavailable {
        /// The cgroup file the limit maps to, e.g. `memory.max`.
        setting: String,
        /// The missing controller.
        controller: &'static str,
    },
    /// A filesystem operation on a cgroup directory failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation, e.g. `create cgroup`.
        op: &'static str,
        /// The directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}
