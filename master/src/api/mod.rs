//! The Kubernetes-compatible HTTP API (axum): discovery and OpenAPI, CRUD with optimistic
//! concurrency, list paging and selectors, watch through the watch cache, the four PATCH
//! types, `Table` output, subresources (`status`, `scale`, `binding`), deletion with
//! finalizers and owner-reference propagation, TLS and bearer-token authorization.

pub mod auth;
pub mod codec;
pub mod discovery;
pub mod filter;
pub mod gc;
pub mod objects;
pub mod patch;
pub mod protobuf;
pub mod resource;
pub mod server;
pub mod status;
pub mod table;
pub mod watch;
pub mod watch_cache;
