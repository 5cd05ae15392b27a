//! The etcd v3 backend (`etcd-client`): keys and revisions map one to one onto etcd's, so
//! several masters can share one etcd cluster. Conditional writes are etcd transactions on
//! `create_revision`/`mod_revision`; lists read at a revision; watches start at a revision
//! with `prev_kv`.

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use futures::StreamExt;

use super::{prefix_end, Event, EventKind, EventStream, KeyValue, ListPage, Store, StoreError};

/// Keys per range request when listing.
const LIST_CHUNK: usize = 1000;

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn compacted_or_backend(e: etcd_client::Error, requested: i64) -> StoreError {
    let text = e.to_string();
    if text.contains("compacted") {
        StoreError::Compacted {
            requested,
            oldest: 0,
        }
    } else if text.contains("future rev") {
        StoreError::FutureRevision {
            requested,
            current: 0,
        }
    } else {
        backend(text)
    }
}

fn kv_of(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
    }
}

/// The condition of a conditional write: the key at revision `expected`, or just existing.
fn precondition(key: &str, expected: Option<i64>) -> Compare {
    match expected {
        Some(e) => Compare::mod_revision(key, CompareOp::Equal, e),
        None => Compare::create_revision(key, CompareOp::Greater, 0),
    }
}

/// Why a conditional write's transaction took its `else` branch (which read the key).
fn failed_precondition(key: &str, expected: Option<i64>, ops: Vec<TxnOpResponse>) -> StoreError {
    let cur = ops.into_iter().find_map(|op| match op {
        TxnOpResponse::Get(g) => g.kvs().first().map(kv_of),
        _ => None,
    });
    match cur {
        None => StoreError::NotFound(key.to_string()),
        Some(c) => StoreError::Conflict {
            key: key.to_string(),
            expected: expected.unwrap_or(0),
            actual: c.mod_revision,
        },
    }
}

/// An etcd-backed [`Store`].
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects to the etcd endpoints (e.g. `http://127.0.0.1:2379`).
    pub async fn connect(endpoints: &[String]) -> Result<EtcdStore, StoreError> {
        let client = Client::connect(endpoints, None).await.map_err(backend)?;
        Ok(EtcdStore { client })
    }

    async fn current_of(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let mut kv = self.client.kv_client();
        let r = kv.get(key, None).await.map_err(backend)?;
        Ok(r.kvs().first().map(kv_of))
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn current_revision(&self) -> Result<i64, StoreError> {
        let mut kv = self.client.kv_client();
        let r = kv
            .get("\0", Some(GetOptions::new().with_count_only()))
            .await
            .map_err(backend)?;
        Ok(r.header().map(|h| h.revision()).unwrap_or(0))
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<i64, StoreError> {
        let mut kv = self.client.kv_client();
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value, None)]);
        let r = kv.txn(txn).await.map_err(backend)?;
        if !r.succeeded() {
            return Err(StoreError::AlreadyExists(key.to_string()));
        }
        Ok(r.header().map(|h| h.revision()).unwrap_or(0))
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.current_of(key).await
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Option<i64>,
    ) -> Result<i64, StoreError> {
        let mut kv = self.client.kv_client();
        let cond = precondition(key, expected);
        let txn = Txn::new()
            .when([cond])
            .and_then([TxnOp::put(key, value, None)])
            .or_else([TxnOp::get(key, None)]);
        let r = kv.txn(txn).await.map_err(backend)?;
        if r.succeeded() {
            return Ok(r.header().map(|h| h.revision()).unwrap_or(0));
        }
        Err(failed_precondition(key, expected, r.op_responses()))
    }

    async fn delete(
        &self,
        key: &str,
        expected: Option<i64>,
    ) -> Result<(KeyValue, i64), StoreError> {
        let mut kv = self.client.kv_client();
        let cond = precondition(key, expected);
        let txn = Txn::new()
            .when([cond])
            .and_then([TxnOp::delete(
                key,
                Some(etcd_client::DeleteOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(key, None)]);
        let r = kv.txn(txn).await.map_err(backend)?;
        let rev = r.header().map(|h| h.revision()).unwrap_or(0);
        let succeeded = r.succeeded();
        let ops = r.op_responses();
        if succeeded {
            let prev = ops.into_iter().find_map(|op| match op {
                TxnOpResponse::Delete(d) => d.prev_kvs().first().map(kv_of),
                _ => None,
            });
            return prev
                .map(|p| (p, rev))
                .ok_or_else(|| StoreError::NotFound(key.to_string()));
        }
        Err(failed_precondition(key, expected, ops))
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        revision: Option<i64>,
    ) -> Result<ListPage, StoreError> {
        let mut kv = self.client.kv_client();
        // The smallest key after `s` is `s` + NUL.
        let mut start: Vec<u8> = match start_after {
            Some(s) if s >= prefix => {
                let mut k = s.as_bytes().to_vec();
                k.push(0);
                k
            }
            _ => prefix.as_bytes().to_vec(),
        };
        // etcd answers in gRPC messages of at most 4 MiB: read in chunks, all at one revision.
        let mut at = revision;
        let mut items = Vec::new();
        loop {
            let want = if limit == 0 {
                LIST_CHUNK
            } else {
                (limit - items.len()).min(LIST_CHUNK)
            };
            let mut opts = GetOptions::new()
                .with_range(prefix_end(prefix))
                .with_limit(want as i64);
            if let Some(r) = at {
                opts = opts.with_revision(r);
            }
            let r = kv
                .get(start.clone(), Some(opts))
                .await
                .map_err(|e| compacted_or_backend(e, at.unwrap_or(0)))?;
            let header_rev = r.header().map(|h| h.revision()).unwrap_or(0);
            let at_rev = *at.get_or_insert(header_rev);
            items.extend(r.kvs().iter().map(kv_of));
            let more = r.more();
            let done = !more || (limit > 0 && items.len() >= limit);
            if done {
                return Ok(ListPage {
                    items,
                    revision: at_rev,
                    more,
                });
            }
            if let Some(last) = items.last() {
                start = last.key.as_bytes().to_vec();
                start.push(0);
            }
        }
    }

    async fn watch(&self, prefix: &str, after: i64) -> Result<EventStream, StoreError> {
        let mut w = self.client.watch_client();
        let opts = WatchOptions::new()
            .with_prefix()
            .with_prev_key()
            .with_start_revision(after + 1);
        let stream = w.watch(prefix, Some(opts)).await.map_err(backend)?;
        let events = stream
            .map(move |resp| {
                let resp = resp.map_err(|e| compacted_or_backend(e, after))?;
                if resp.compact_revision() > 0 {
                    return Err(StoreError::Compacted {
                        requested: after,
                        oldest: resp.compact_revision(),
                    });
                }
                if resp.canceled() {
                    return Err(backend(format!("watch canceled: {}", resp.cancel_reason())));
                }
                Ok(resp
                    .events()
                    .iter()
                    .filter_map(|e| {
                        let kv = kv_of(e.kv()?);
                        let prev = e.prev_kv().map(kv_of);
                        Some(match e.event_type() {
                            EventType::Put => Event {
                                kind: EventKind::Put,
                                revision: kv.mod_revision,
                                kv,
                                prev,
                            },
                            EventType::Delete => {
                                let rev = kv.mod_revision;
                                let last = prev.clone().unwrap_or(kv);
                                Event {
                                    kind: EventKind::Delete,
                                    revision: rev,
                                    kv: KeyValue {
                                        mod_revision: rev,
                                        ..last
                                    },
                                    prev,
                                }
                            }
                        })
                    })
                    .collect::<Vec<_>>())
            })
            .flat_map(|r: Result<Vec<Event>, StoreError>| match r {
                Ok(evs) => futures::stream::iter(evs.into_iter().map(Ok).collect::<Vec<_>>()),
                Err(e) => futures::stream::iter(vec![Err(e)]),
            });
        Ok(Box::pin(events))
    }

    async fn compact(&self, revision: i64) -> Result<(), StoreError> {
        let mut kv = self.client.kv_client();
        kv.compact(revision, None).await.map_err(backend)?;
        Ok(())
    }
}
