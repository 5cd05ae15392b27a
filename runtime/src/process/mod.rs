//! The container's init process and how it talks to the runtime.
//!
//! `create` clones a child with the new namespaces; the child ([`init`]) waits for the parent's
//! go-ahead (uid/gid maps written, cgroups joined), builds the container, reports `Ready`, and
//! then waits on its start socket until `start` connects, when it execs the user process.

pub mod channel;
pub mod console;
pub mod exec;
pub mod fdpass;
pub mod init;
pub mod sched;
pub mod spawn;
