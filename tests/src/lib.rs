//! podlet's test tiers, as a library that every crate's tests can use.
//!
//! - [`vm`]: the cgroup v2 tier — boots User-Mode Linux or QEMU on the host's filesystem and runs a
//!   test binary inside it, returning its exit status and output.
//! - [`topology`]: the multi-node tier — network namespaces as nodes on an underlay bridge.
//! - [`leaks`]: the leak guard — snapshots what a test run could leave behind and diffs it.
//! - [`bins`]: finding the workspace's binaries from a test.

pub mod bins;
pub mod busybox;
pub mod etcd;
pub mod host_dirs;
pub mod leaks;
pub mod topology;
pub mod vm;
