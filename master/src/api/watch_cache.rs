//! The watch cache: one store watch for the whole registry, decoded once, kept in a ring of
//! recent events and fanned out on a broadcast channel, so a thousand watchers cost one store
//! watch. A watcher asks for events after a revision; if the ring no longer reaches back that
//! far it gets `Expired` (the API's `410 Gone`) and re-lists.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio::sync::broadcast;

use super::codec::Codec;
use crate::store::{EventKind, Store, StoreError};

/// How many recent events the ring keeps.
pub const RING: usize = 20_000;

/// A decoded event.
#[derive(Debug, Clone)]
pub struct CachedEvent {
    /// Its revision.
    pub revision: i64,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: &'static str,
    /// The store key.
    pub key: String,
    /// The object after the change (for DELETED: its last state).
    pub object: Arc<Value>,
    /// The object before the change, if any.
    pub prev: Option<Arc<Value>>,
}

struct State {
    ring: VecDeque<Arc<CachedEvent>>,
    /// Every event with a revision above this is in the ring.
    floor: i64,
    /// The newest revision the cache has seen.
    latest: i64,
}

/// The cache; cheap to clone.
#[derive(Clone)]
pub struct WatchCache {
    state: Arc<Mutex<State>>,
    /// Replaced when history is lost (compaction): the old receivers then see `Closed` and
    /// their watches end with a 410, so clients re-list.
    tx: Arc<Mutex<broadcast::Sender<Arc<CachedEvent>>>>,
}

impl std::fmt::Debug for WatchCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchCache").finish_non_exhaustive()
    }
}

/// What a new watcher gets: the events to replay, and a receiver for the live ones.
pub type Subscription = (Vec<Arc<CachedEvent>>, broadcast::Receiver<Arc<CachedEvent>>);

/// The ring cannot serve a watch from that revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    /// The revision asked for.
    pub requested: i64,
    /// The oldest revision the cache can serve from.
    pub floor: i64,
}

impl WatchCache {
    /// Starts the cache at the store's current revision.
    pub async fn start(store: Arc<dyn Store>, codec: Codec) -> Result<WatchCache, StoreError> {
        let rev = store.current_revision().await?;
        let (tx, _) = broadcast::channel(RING);
        let cache = WatchCache {
            state: Arc::new(Mutex::new(State {
                ring: VecDeque::new(),
                floor: rev,
                latest: rev,
            })),
            tx: Arc::new(Mutex::new(tx)),
        };
        let c = cache.clone();
        tokio::spawn(async move { c.feed(store, codec, rev).await });
        Ok(cache)
    }

    async fn feed(self, store: Arc<dyn Store>, codec: Codec, mut after: i64) {
        loop {
            let mut stream = match store.watch("/registry/", after).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "watch cache: store watch failed; retrying");
                    if let StoreError::Compacted { .. } = e {
                        after = store.current_revision().await.unwrap_or(after);
                        self.reset(after);
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            while let Some(ev) = stream.next().await {
                let ev = match ev {
                    Ok(ev) => ev,
                    Err(e) => {
                        tracing::warn!(error = %e, "watch cache: store watch ended");
                        if let StoreError::Compacted { .. } = e {
                            after = store.current_revision().await.unwrap_or(after);
                            self.reset(after);
                        }
                        break;
                    }
                };
                after = ev.revision;
                let object = match codec.decode(&ev.kv) {
                    Ok(o) => o,
                    Err(e) => {
                        tracing::error!(key = %ev.kv.key, error = %e, "watch cache: undecodable object");
                        continue;
                    }
                };
                let prev = ev
                    .prev
                    .as_ref()
                    .and_then(|p| codec.decode(p).ok())
                    .map(Arc::new);
                let kind = match (ev.kind, &prev) {
                    (EventKind::Delete, _) => "DELETED",
                    (EventKind::Put, None) => "ADDED",
                    (EventKind::Put, Some(_)) => "MODIFIED",
                };
                self.push(Arc::new(CachedEvent {
                    revision: ev.revision,
                    kind,
                    key: ev.kv.key.clone(),
                    object: Arc::new(object),
                    prev,
                }));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// History between the last event and `resume` is lost: serve only from `resume` on, and
    /// end every current watch (they get a 410 and re-list).
    fn reset(&self, resume: i64) {
        let mut st = self.state.lock().unwrap();
        st.ring.clear();
        st.floor = resume;
        st.latest = st.latest.max(resume);
        *self.tx.lock().unwrap() = broadcast::channel(RING).0;
    }

    fn push(&self, ev: Arc<CachedEvent>) {
        let mut st = self.state.lock().unwrap();
        if ev.revision <= st.latest && st.ring.back().is_some_and(|b| b.revision >= ev.revision) {
            return;
        }
        st.latest = ev.revision;
        st.ring.push_back(ev.clone());
        while st.ring.len() > RING {
            if let Some(old) = st.ring.pop_front() {
                st.floor = old.revision;
            }
        }
        // Sent under the lock: a subscriber registered under it sees no gap and no duplicate.
        let _ = self.tx.lock().unwrap().send(ev);
    }

    /// The newest revision seen.
    pub fn latest(&self) -> i64 {
        self.state.lock().unwrap().latest
    }

    /// Events after `after` with keys under `prefix` from the ring, and a receiver for the
    /// ones that follow.
    pub fn subscribe(&self, prefix: &str, after: i64) -> Result<Subscription, Expired> {
        let st = self.state.lock().unwrap();
        if after < st.floor {
            return Err(Expired {
                requested: after,
                floor: st.floor,
            });
        }
        let replay = st
            .ring
            .iter()
            .filter(|e| e.revision > after && e.key.starts_with(prefix))
            .cloned()
            .collect();
        Ok((replay, self.tx.lock().unwrap().subscribe()))
    }

    /// Waits (briefly) until the cache has seen `rev`, so a watch that starts from a list's
    /// revision does not race the cache.
    pub async fn wait_for(&self, rev: i64) {
        for _ in 0..200 {
            if self.latest() >= rev {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
