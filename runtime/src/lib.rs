//! podlet's container runtime library.
//!
//! The runtime does kernel work directly through syscalls. This first layer holds what every
//! other part depends on: where podlet's cgroups live ([`cgroups`]) and what the running kernel
//! can do ([`kernel_check`]).

pub mod cgroups;
pub mod kernel_check;
