//! The embedded backend: one SQLite file in WAL mode.
//!
//! Tables: `kv` (the live keys with their create/mod revisions), `events` (every change, the
//! history that watches and consistent list pages read), `meta` (the current and compacted
//! revisions). A write is one `BEGIN IMMEDIATE` transaction that bumps the revision, changes
//! `kv` and appends to `events`; it is acknowledged only after `COMMIT`, and WAL with
//! `synchronous=NORMAL` keeps every committed transaction across a crash of the process.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::watch;

use super::{prefix_end, Event, EventKind, EventStream, KeyValue, ListPage, Store, StoreError};

/// How many events a watch reads from the table at a time.
const WATCH_BATCH: usize = 512;

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

struct Inner {
    conn: Mutex<Connection>,
    /// The latest committed revision, for watchers to wait on.
    revision: watch::Sender<i64>,
}

/// A SQLite-backed [`Store`].
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

fn meta(conn: &Connection, name: &str) -> rusqlite::Result<i64> {
    conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
        r.get(0)
    })
}

fn row_kv(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyValue> {
    Ok(KeyValue {
        key: r.get(0)?,
        value: r.get(1)?,
        create_revision: r.get(2)?,
        mod_revision: r.get(3)?,
    })
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open(path).map_err(backend)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA busy_timeout = 5000;
             CREATE TABLE IF NOT EXISTS kv (
                 key TEXT PRIMARY KEY, value BLOB NOT NULL,
                 create_rev INTEGER NOT NULL, mod_rev INTEGER NOT NULL) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS events (
                 rev INTEGER PRIMARY KEY, key TEXT NOT NULL, kind INTEGER NOT NULL,
                 value BLOB NOT NULL, create_rev INTEGER NOT NULL,
                 prev_value BLOB, prev_create_rev INTEGER, prev_mod_rev INTEGER);
             CREATE INDEX IF NOT EXISTS events_key ON events (key, rev);
             CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
             INSERT OR IGNORE INTO meta VALUES ('rev', 1), ('compacted', 0);",
        )
        .map_err(backend)?;
        let rev = meta(&conn, "rev").map_err(backend)?;
        let (tx, _) = watch::channel(rev);
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                revision: tx,
            }),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = inner.conn.lock().map_err(|_| backend("poisoned lock"))?;
            f(&mut conn)
        })
        .await
        .map_err(backend)?
    }

    /// One write transaction: `f` gets the transaction and the new revision.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>, i64) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<(T, i64), StoreError> {
        let inner = self.inner.clone();
        let (out, rev) = self
            .blocking(move |conn| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(backend)?;
                let rev = meta(&tx, "rev").map_err(backend)? + 1;
                let out = f(&tx, rev)?;
                tx.execute("UPDATE meta SET value = ?1 WHERE name = 'rev'", [rev])
                    .map_err(backend)?;
                tx.commit().map_err(backend)?;
                Ok((out, rev))
            })
            .await?;
        inner.revision.send_replace(rev);
        Ok((out, rev))
    }
}

fn current(tx: &Connection, key: &str) -> Result<Option<KeyValue>, StoreError> {
    tx.prepare_cached("SELECT key, value, create_rev, mod_rev FROM kv WHERE key = ?1")
        .map_err(backend)?
        .query_row([key], row_kv)
        .optional()
        .map_err(backend)
}

fn record(
    tx: &Connection,
    rev: i64,
    kind: EventKind,
    kv: &KeyValue,
    prev: Option<&KeyValue>,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO events (rev, key, kind, value, create_rev, prev_value, prev_create_rev, prev_mod_rev)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .map_err(backend)?
    .execute(params![
        rev,
        kv.key,
        matches!(kind, EventKind::Delete) as i64,
        kv.value,
        kv.create_revision,
        prev.map(|p| p.value.clone()),
        prev.map(|p| p.create_revision),
        prev.map(|p| p.mod_revision),
    ])
    .map_err(backend)?;
    Ok(())
}

fn put(tx: &Connection, kv: &KeyValue) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO kv (key, value, create_rev, mod_rev) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, mod_rev = excluded.mod_rev",
    )
    .map_err(backend)?
    .execute(params![
        kv.key,
        kv.value,
        kv.create_revision,
        kv.mod_revision
    ])
    .map_err(backend)?;
    Ok(())
}

fn check_expected(key: &str, cur: &KeyValue, expected: Option<i64>) -> Result<(), StoreError> {
    match expected {
        Some(e) if e != cur.mod_revision => Err(StoreError::Conflict {
            key: key.to_string(),
            expected: e,
            actual: cur.mod_revision,
        }),
        _ => Ok(()),
    }
}

/// Reads the events after `after` for keys with `prefix`, at most `WATCH_BATCH`.
fn events_after(conn: &Connection, prefix: &str, after: i64) -> Result<Vec<Event>, StoreError> {
    let end = String::from_utf8_lossy(&prefix_end(prefix)).into_owned();
    let mut stmt = conn
        .prepare_cached(
            "SELECT rev, key, kind, value, create_rev, prev_value, prev_create_rev, prev_mod_rev
             FROM events WHERE rev > ?1 AND key >= ?2 AND key < ?3 ORDER BY rev LIMIT ?4",
        )
        .map_err(backend)?;
    let rows = stmt
        .query_map(params![after, prefix, end, WATCH_BATCH as i64], |r| {
            let rev: i64 = r.get(0)?;
            let key: String = r.get(1)?;
            let prev_value: Option<Vec<u8>> = r.get(5)?;
            let prev = match prev_value {
                Some(v) => Some(KeyValue {
                    key: key.clone(),
                    value: v,
                    create_revision: r.get(6)?,
                    mod_revision: r.get(7)?,
                }),
                None => None,
            };
            Ok(Event {
                kind: if r.get::<_, i64>(2)? == 1 {
                    EventKind::Delete
                } else {
                    EventKind::Put
                },
                revision: rev,
                kv: KeyValue {
                    key,
                    value: r.get(3)?,
                    create_revision: r.get(4)?,
                    mod_revision: rev,
                },
                prev,
            })
        })
        .map_err(backend)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(backend)
}

#[async_trait]
impl Store for SqliteStore {
    async fn current_revision(&self) -> Result<i64, StoreError> {
        Ok(*self.inner.revision.borrow())
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<i64, StoreError> {
        let key = key.to_string();
        let (_, rev) = self
            .write(move |tx, rev| {
                if current(tx, &key)?.is_some() {
                    return Err(StoreError::AlreadyExists(key));
                }
                let kv = KeyValue {
                    key,
                    value,
                    create_revision: rev,
                    mod_revision: rev,
                };
                put(tx, &kv)?;
                record(tx, rev, EventKind::Put, &kv, None)
            })
            .await?;
        Ok(rev)
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let key = key.to_string();
        self.blocking(move |conn| current(conn, &key)).await
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Option<i64>,
    ) -> Result<i64, StoreError> {
        let key = key.to_string();
        let (_, rev) = self
            .write(move |tx, rev| {
                let cur = current(tx, &key)?.ok_or_else(|| StoreError::NotFound(key.clone()))?;
                check_expected(&key, &cur, expected)?;
                let kv = KeyValue {
                    key: key.clone(),
                    value,
                    create_revision: cur.create_revision,
                    mod_revision: rev,
                };
                put(tx, &kv)?;
                record(tx, rev, EventKind::Put, &kv, Some(&cur))
            })
            .await?;
        Ok(rev)
    }

    async fn delete(
        &self,
        key: &str,
        expected: Option<i64>,
    ) -> Result<(KeyValue, i64), StoreError> {
        let key = key.to_string();
        let (prev, rev) = self
            .write(move |tx, rev| {
                let cur = current(tx, &key)?.ok_or_else(|| StoreError::NotFound(key.clone()))?;
                check_expected(&key, &cur, expected)?;
                tx.prepare_cached("DELETE FROM kv WHERE key = ?1")
                    .map_err(backend)?
                    .execute([&key])
                    .map_err(backend)?;
                let tomb = KeyValue {
                    mod_revision: rev,
                    ..cur.clone()
                };
                record(tx, rev, EventKind::Delete, &tomb, Some(&cur))?;
                Ok(cur)
            })
            .await?;
        Ok((prev, rev))
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        revision: Option<i64>,
    ) -> Result<ListPage, StoreError> {
        let prefix = prefix.to_string();
        let start_after = start_after.map(str::to_string);
        self.blocking(move |conn| {
            let tx = conn.transaction().map_err(backend)?;
            let now = meta(&tx, "rev").map_err(backend)?;
            let compacted = meta(&tx, "compacted").map_err(backend)?;
            let at = revision.unwrap_or(now);
            if at > now {
                return Err(StoreError::FutureRevision {
                    requested: at,
                    current: now,
                });
            }
            if at < now && at < compacted {
                return Err(StoreError::Compacted {
                    requested: at,
                    oldest: compacted,
                });
            }
            let end = String::from_utf8_lossy(&prefix_end(&prefix)).into_owned();
            let lower = start_after.clone().unwrap_or_default();
            let lo = if lower.as_str() > prefix.as_str() {
                lower
            } else {
                prefix.clone()
            };
            let strict = start_after.is_some();
            let fetch = if limit == 0 { -1 } else { limit as i64 + 1 };
            let mut items: Vec<KeyValue> = {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT key, value, create_rev, mod_rev FROM kv
                         WHERE key >= ?1 AND key < ?2 AND (?3 = 0 OR key > ?1) AND mod_rev <= ?4
                         ORDER BY key LIMIT ?5",
                    )
                    .map_err(backend)?;
                let rows = stmt
                    .query_map(params![lo, end, strict as i64, at, fetch], row_kv)
                    .map_err(backend)?;
                rows.collect::<rusqlite::Result<_>>().map_err(backend)?
            };
            if at < now {
                // Keys changed after `at`: their state at `at` comes from the history.
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT DISTINCT key FROM events WHERE rev > ?1 AND key >= ?2 AND key < ?3
                         AND (?4 = 0 OR key > ?2)",
                    )
                    .map_err(backend)?;
                let changed: Vec<String> = stmt
                    .query_map(params![at, lo, end, strict as i64], |r| r.get(0))
                    .map_err(backend)?
                    .collect::<rusqlite::Result<_>>()
                    .map_err(backend)?;
                let mut past = tx
                    .prepare_cached(
                        "SELECT kind, value, create_rev, rev FROM events
                         WHERE key = ?1 AND rev <= ?2 ORDER BY rev DESC LIMIT 1",
                    )
                    .map_err(backend)?;
                for key in changed {
                    let row = past
                        .query_row(params![key, at], |r| {
                            Ok((
                                r.get::<_, i64>(0)?,
                                r.get::<_, Vec<u8>>(1)?,
                                r.get::<_, i64>(2)?,
                                r.get::<_, i64>(3)?,
                            ))
                        })
                        .optional()
                        .map_err(backend)?;
                    items.retain(|kv| kv.key != key);
                    if let Some((0, value, create_revision, mod_revision)) = row {
                        items.push(KeyValue {
                            key,
                            value,
                            create_revision,
                            mod_revision,
                        });
                    }
                }
                items.sort_by(|a, b| a.key.cmp(&b.key));
            }
            let more = limit > 0 && items.len() > limit;
            if limit > 0 {
                items.truncate(limit);
            }
            Ok(ListPage {
                items,
                revision: at,
                more,
            })
        })
        .await
    }

    async fn watch(&self, prefix: &str, after: i64) -> Result<EventStream, StoreError> {
        let compacted = {
            let this = self.clone();
            this.blocking(|conn| meta(conn, "compacted").map_err(backend))
                .await?
        };
        let now = *self.inner.revision.borrow();
        if after < compacted - 1 {
            return Err(StoreError::Compacted {
                requested: after,
                oldest: compacted,
            });
        }
        if after > now {
            return Err(StoreError::FutureRevision {
                requested: after,
                current: now,
            });
        }
        Ok(event_stream(self.clone(), prefix.to_string(), after))
    }

    async fn compact(&self, revision: i64) -> Result<(), StoreError> {
        self.blocking(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend)?;
            tx.execute("DELETE FROM events WHERE rev < ?1", [revision])
                .map_err(backend)?;
            tx.execute(
                "UPDATE meta SET value = MAX(value, ?1) WHERE name = 'compacted'",
                [revision],
            )
            .map_err(backend)?;
            tx.commit().map_err(backend)
        })
        .await
    }
}

/// The watch loop: read history after the last seen revision in batches; when caught up,
/// wait for the next commit.
fn event_stream(store: SqliteStore, prefix: String, after: i64) -> EventStream {
    struct State {
        store: SqliteStore,
        prefix: String,
        last: i64,
        buf: std::collections::VecDeque<Event>,
        rx: watch::Receiver<i64>,
        done: bool,
    }
    let rx = store.inner.revision.subscribe();
    let state = State {
        store,
        prefix,
        last: after,
        buf: Default::default(),
        rx,
        done: false,
    };
    Box::pin(futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            if let Some(ev) = st.buf.pop_front() {
                st.last = ev.revision;
                return Some((Ok(ev), st));
            }
            // Mark the current revision seen before reading, so no commit is missed.
            let seen = *st.rx.borrow_and_update();
            if seen > st.last {
                let (p, from) = (st.prefix.clone(), st.last);
                let batch = st
                    .store
                    .blocking(move |conn| {
                        let compacted = meta(conn, "compacted").map_err(backend)?;
                        if from < compacted - 1 {
                            return Err(StoreError::Compacted {
                                requested: from,
                                oldest: compacted,
                            });
                        }
                        events_after(conn, &p, from)
                    })
                    .await;
                match batch {
                    // Nothing under this prefix up to (at least) `seen`.
                    Ok(evs) if evs.is_empty() => st.last = seen,
                    Ok(evs) => st.buf.extend(evs),
                    Err(e) => {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                }
                continue;
            }
            if st.rx.changed().await.is_err() {
                return None;
            }
        }
    }))
}
