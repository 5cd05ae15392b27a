//! podlet's container runtime library.
//!
//! Runs OCI bundles: namespaces, root filesystem, cgroups, capabilities, seccomp — each done
//! with syscalls. [`container`] is the operation API (create, start, kill, delete, …) that the
//! runc-compatible CLI and the rest of podlet call; the other modules are its steps.

pub mod bpf;
pub mod cgroups;
pub mod container;
pub mod engine;
pub mod exec;
pub mod idmap;
pub mod image;
pub mod kernel_check;
pub mod mount_options;
pub mod pod;
pub mod ports;
pub mod process;
pub mod rootfs;
pub mod sealed_exe;
pub mod seccomp;
pub mod spec;
pub mod state;
pub mod syscall;
