//! podlet's CNI plugin library.
//!
//! This first layer reads and validates network configuration as the CNI 1.1 specification
//! defines it ([`config`]) and renders errors in the spec's shape with its codes ([`error`]).

pub mod config;
pub mod error;
pub mod ipam;
pub mod link;
pub mod plugin;
pub mod routing;
