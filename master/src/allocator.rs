//! Service ClusterIPs and NodePorts, allocated in O(1) store operations from a bitmap kept in
//! the store (Kubernetes' `RangeAllocation`): one read and one compare-and-swap per allocation,
//! instead of listing every Service. Bits are released when a Service goes away
//! (`controllers::service_ranges`), which also repairs bits nothing holds any more.

use std::net::Ipv4Addr;

use crate::store::{Store, StoreError};

/// A contiguous range of values with its bitmap's store key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// Where the bitmap lives (outside `/registry/`, so no watch sees it).
    pub key: &'static str,
    /// The first value.
    pub base: u32,
    /// How many values.
    pub size: u32,
    /// Offsets never handed out by [`allocate`] (requested explicitly, they may be claimed).
    pub reserved: &'static [u32],
}

/// ClusterIPs: 10.43.0.0/16 as offsets from 10.43.0.0; .0.0 (network), .0.1 (`kubernetes`)
/// and .0.10 (cluster DNS) are never picked, .255.255 neither.
pub const SERVICE_IPS: Range = Range {
    key: "/podlet/ranges/serviceips",
    base: u32::from_be_bytes([10, 43, 0, 0]),
    size: 1 << 16,
    reserved: &[0, 1, 10, 65_535],
};

/// NodePorts: 30000–32767.
pub const NODE_PORTS: Range = Range {
    key: "/podlet/ranges/servicenodeports",
    base: 30_000,
    size: 2_768,
    reserved: &[],
};

impl Range {
    /// The offset of `value`, if it is in the range.
    pub fn offset(&self, value: u32) -> Option<u32> {
        value.checked_sub(self.base).filter(|o| *o < self.size)
    }

    /// The offset of a ClusterIP.
    pub fn ip_offset(&self, ip: Ipv4Addr) -> Option<u32> {
        self.offset(u32::from(ip))
    }
}

/// Why an allocation failed.
#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    /// Every value is taken.
    #[error("range {0} is full")]
    Full(&'static str),
    /// The requested value is taken.
    #[error("provided value is already allocated")]
    Taken,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Too many concurrent writers.
    #[error("range {0}: too many concurrent allocations, try again")]
    Contended(&'static str),
}

fn get(bits: &[u8], i: u32) -> bool {
    bits.get((i / 8) as usize)
        .is_some_and(|b| b & (1 << (i % 8)) != 0)
}

fn set(bits: &mut [u8], i: u32, on: bool) {
    if let Some(b) = bits.get_mut((i / 8) as usize) {
        if on {
            *b |= 1 << (i % 8);
        } else {
            *b &= !(1 << (i % 8));
        }
    }
}

/// The first free offset at or after `start` (wrapping), skipping reserved ones.
fn first_free(range: &Range, bits: &[u8], start: u32) -> Option<u32> {
    (0..range.size)
        .map(|i| (start + i) % range.size)
        .find(|o| !get(bits, *o) && !range.reserved.contains(o))
}

/// The bitmap and its revision (`None` when it does not exist yet).
async fn load(store: &dyn Store, range: &Range) -> Result<(Vec<u8>, Option<i64>), StoreError> {
    let mut bits = vec![0u8; range.size.div_ceil(8) as usize];
    Ok(match store.get(range.key).await? {
        Some(kv) => {
            let n = kv.value.len().min(bits.len());
            bits[..n].copy_from_slice(&kv.value[..n]);
            (bits, Some(kv.mod_revision))
        }
        None => (bits, None),
    })
}

/// Writes the bitmap if nobody else did since `rev`; `false` on a lost race.
async fn save(
    store: &dyn Store,
    range: &Range,
    bits: Vec<u8>,
    rev: Option<i64>,
) -> Result<bool, StoreError> {
    let r = match rev {
        Some(rev) => store.update(range.key, bits, Some(rev)).await.map(drop),
        None => store.create(range.key, bits).await.map(drop),
    };
    match r {
        Ok(()) => Ok(true),
        Err(StoreError::Conflict { .. } | StoreError::AlreadyExists(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Changes the bitmap with `f` (which returns its answer, or `None` to write nothing) under
/// compare-and-swap, retrying lost races.
async fn modify<T>(
    store: &dyn Store,
    range: &Range,
    mut f: impl FnMut(&mut Vec<u8>) -> Result<Option<T>, AllocError>,
) -> Result<Option<T>, AllocError> {
    for _ in 0..32 {
        let (mut bits, rev) = load(store, range).await?;
        let Some(out) = f(&mut bits)? else {
            return Ok(None);
        };
        if save(store, range, bits, rev).await? {
            return Ok(Some(out));
        }
    }
    Err(AllocError::Contended(range.key))
}

/// Takes a free value, searching from offset `start`; returns the value.
pub async fn allocate(store: &dyn Store, range: &Range, start: u32) -> Result<u32, AllocError> {
    modify(store, range, |bits| {
        let o = first_free(range, bits, start % range.size).ok_or(AllocError::Full(range.key))?;
        set(bits, o, true);
        Ok(Some(range.base + o))
    })
    .await
    .map(|v| v.expect("allocate always writes"))
}

/// Takes the requested `value`; [`AllocError::Taken`] if something holds it.
pub async fn claim(store: &dyn Store, range: &Range, value: u32) -> Result<(), AllocError> {
    let Some(o) = range.offset(value) else {
        return Ok(());
    };
    modify(store, range, |bits| {
        if get(bits, o) {
            return Err(AllocError::Taken);
        }
        set(bits, o, true);
        Ok(Some(()))
    })
    .await
    .map(drop)
}

/// Gives values back (ones outside the range are ignored).
pub async fn release(store: &dyn Store, range: &Range, values: &[u32]) -> Result<(), AllocError> {
    let offsets: Vec<u32> = values.iter().filter_map(|v| range.offset(*v)).collect();
    if offsets.is_empty() {
        return Ok(());
    }
    modify(store, range, |bits| {
        let held = offsets.iter().any(|o| get(bits, *o));
        for o in &offsets {
            set(bits, *o, false);
        }
        Ok(held.then_some(()))
    })
    .await
    .map(drop)
}

/// Marks `used` values taken (a missing bitmap is created with them), returning the offsets
/// that are set but not in `used` (candidates for repair).
pub async fn reconcile(
    store: &dyn Store,
    range: &Range,
    used: &[u32],
) -> Result<Vec<u32>, AllocError> {
    let offsets: Vec<u32> = used.iter().filter_map(|v| range.offset(*v)).collect();
    let mut unused = Vec::new();
    modify(store, range, |bits| {
        let missing = offsets.iter().any(|o| !get(bits, *o));
        for o in &offsets {
            set(bits, *o, true);
        }
        unused = (0..range.size)
            .filter(|o| get(bits, *o) && !offsets.contains(o))
            .collect();
        Ok(missing.then_some(()))
    })
    .await?;
    Ok(unused.into_iter().map(|o| range.base + o).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    const SMALL: Range = Range {
        key: "/podlet/ranges/test",
        base: 100,
        size: 5,
        reserved: &[1],
    };

    #[tokio::test]
    async fn values_are_handed_out_once_skipping_reserved_and_come_back_on_release() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(allocate(&store, &SMALL, 0).await.unwrap());
        }
        assert_eq!(got, [100, 102, 103, 104]);
        assert!(matches!(
            allocate(&store, &SMALL, 0).await,
            Err(AllocError::Full(_))
        ));
        assert!(matches!(
            claim(&store, &SMALL, 103).await,
            Err(AllocError::Taken)
        ));
        // A reserved value can be asked for by name, once.
        claim(&store, &SMALL, 101).await.unwrap();
        release(&store, &SMALL, &[103]).await.unwrap();
        assert_eq!(allocate(&store, &SMALL, 3).await.unwrap(), 103);
        // Reconcile keeps what is used and reports what nothing holds.
        let unused = reconcile(&store, &SMALL, &[100, 101, 102]).await.unwrap();
        assert_eq!(unused, [103, 104]);
        release(&store, &SMALL, &unused).await.unwrap();
        assert_eq!(allocate(&store, &SMALL, 0).await.unwrap(), 103);
    }

    #[tokio::test]
    async fn concurrent_allocations_never_collide() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(SqliteStore::open(&dir.path().join("s.db")).unwrap());
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let s = store.clone();
                tokio::spawn(async move {
                    let mut v = Vec::new();
                    for _ in 0..20 {
                        v.push(allocate(s.as_ref(), &NODE_PORTS, 0).await.unwrap());
                    }
                    v
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "a value was handed out twice");
        assert!(all.iter().all(|p| (30_000..=32_767).contains(p)));
    }
}
