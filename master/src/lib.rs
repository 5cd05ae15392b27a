//! podlet's master library.
//!
//! This first layer is Kubernetes label selector parsing and matching ([`selector`]), used by
//! list/watch filtering, Services and ReplicaSets.

pub mod allocator;
pub mod api;
pub mod bootstrap;
pub mod controllers;
pub mod default_services;
pub mod resources;
pub mod selector;
pub mod serve;
pub mod store;
