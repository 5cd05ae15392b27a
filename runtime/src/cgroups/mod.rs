//! Cgroup discovery and podlet's cgroup root.
//!
//! podlet never touches a cgroup outside the subtree it was started in: its cgroup root is a
//! child of the process's own cgroup in every hierarchy (systemd-delegation style), and every
//! container cgroup resolves below that root, whatever `cgroupsPath` a bundle asks for.

pub mod devices_bpf;
mod error;
mod manager;
mod membership;
mod mountinfo;
mod root;
mod stats;
pub mod v1;

pub use error::CgroupError;
pub use manager::{v2_settings, ContainerCgroups};
pub use membership::{parse_proc_cgroup, CgroupMembership};
pub use mountinfo::{parse_cgroup_mounts, unescape as unescape_mountinfo, CgroupMount};
pub use root::{CgroupRoot, CgroupVersion, HierarchyRoot, DEFAULT_CGROUP_ROOT};
pub use stats::{oom_kills, stats};
