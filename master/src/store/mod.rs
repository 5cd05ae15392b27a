//! The master's storage: one trait, two backends — embedded SQLite ([`sqlite`], the default,
//! one file) and etcd v3 ([`etcd`], for several masters sharing one cluster).
//!
//! The model is etcd's: a flat, ordered key space with one global revision counter. Every write
//! gets the next revision; an object's `resourceVersion` is its `mod_revision`. Lists are
//! consistent snapshots at a revision (so `continue` pages agree with the first page), and a
//! watch replays every event after a revision, until history is compacted (then
//! [`StoreError::Compacted`], which the API turns into `410 Gone`).

pub mod etcd;
pub mod sqlite;

use std::pin::Pin;

use async_trait::async_trait;
use futures::Stream;

/// A stored value with its revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value (an encoded object).
    pub value: Vec<u8>,
    /// Revision of the write that created it.
    pub create_revision: i64,
    /// Revision of its last write (the object's `resourceVersion`).
    pub mod_revision: i64,
}

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Created or updated.
    Put,
    /// Deleted.
    Delete,
}

/// One change, as a watch sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The revision of the change.
    pub revision: i64,
    /// The key's new value (for a delete: the last value, with `mod_revision` = the delete's).
    pub kv: KeyValue,
    /// The value before the change, if any.
    pub prev: Option<KeyValue>,
}

/// A page of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    /// The values, in key order.
    pub items: Vec<KeyValue>,
    /// The revision the page was read at.
    pub revision: i64,
    /// Whether more keys follow the last one.
    pub more: bool,
}

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// The key does not exist.
    #[error("key {0} not found")]
    NotFound(String),
    /// The key exists already (create).
    #[error("key {0} already exists")]
    AlreadyExists(String),
    /// The key's revision is not the expected one (optimistic concurrency).
    #[error("key {key} was modified: expected revision {expected}, found {actual}")]
    Conflict {
        /// The key.
        key: String,
        /// The revision the caller had.
        expected: i64,
        /// The key's current revision.
        actual: i64,
    },
    /// The requested revision is older than the retained history.
    #[error("revision {requested} is compacted (oldest available: {oldest})")]
    Compacted {
        /// The revision asked for.
        requested: i64,
        /// The oldest revision still available.
        oldest: i64,
    },
    /// The requested revision is in the future.
    #[error("revision {requested} is newer than the store's {current}")]
    FutureRevision {
        /// The revision asked for.
        requested: i64,
        /// The store's current revision.
        current: i64,
    },
    /// The backend failed.
    #[error("storage backend: {0}")]
    Backend(String),
}

/// A stream of watch events; an `Err` ends it.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<Event, StoreError>> + Send>>;

/// The storage interface the API server uses.
#[async_trait]
pub trait Store: Send + Sync {
    /// The current revision.
    async fn current_revision(&self) -> Result<i64, StoreError>;
    /// Creates `key`; fails with `AlreadyExists` if present. Returns the new revision.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<i64, StoreError>;
    /// Reads `key`.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;
    /// Replaces `key`'s value if its `mod_revision` is `expected` (or unconditionally when
    /// None). Returns the new revision.
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Option<i64>,
    ) -> Result<i64, StoreError>;
    /// Deletes `key` if its `mod_revision` is `expected` (or unconditionally when None).
    /// Returns the deleted value and the delete's revision.
    async fn delete(&self, key: &str, expected: Option<i64>)
        -> Result<(KeyValue, i64), StoreError>;
    /// Lists keys starting with `prefix` and greater than `start_after`, at most `limit`
    /// (0: all), as they were at `revision` (None: now).
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        revision: Option<i64>,
    ) -> Result<ListPage, StoreError>;
    /// Every change to keys starting with `prefix` after revision `after`, then live ones.
    async fn watch(&self, prefix: &str, after: i64) -> Result<EventStream, StoreError>;
    /// Drops history up to (excluding) `revision`.
    async fn compact(&self, revision: i64) -> Result<(), StoreError>;
}

/// The end of the key range covering every key that starts with `prefix` (etcd's `range_end`).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_key() {
        assert_eq!(prefix_end("/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end("ab"), b"ac".to_vec());
    }
}
