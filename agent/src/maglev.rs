//! Maglev consistent hashing (Eisenbud et al., NSDI 2016, section 3.4).
//!
//! Each backend gets a permutation of the table's slots from two hashes of its name; backends
//! take turns claiming their next preferred free slot until the table is full. Lookups are one
//! hash and one index; removing a backend moves few flows that were not on it.

/// Why a table could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaglevError {
    /// The table size must be a prime so every permutation covers every slot.
    #[error("maglev table size {0} is not a prime")]
    SizeNotPrime(usize),
    /// More backends than slots.
    #[error("{backends} backends do not fit a table of {size} slots")]
    TooManyBackends {
        /// Backends given.
        backends: usize,
        /// Table size.
        size: usize,
    },
    /// The same backend was listed twice.
    #[error("duplicate backend {0:?}")]
    DuplicateBackend(String),
}

/// The default table size: a prime well above 100 × a typical backend count.
pub const DEFAULT_TABLE_SIZE: usize = 65_537;

/// 64-bit FNV-1a with a seed folded into the offset basis.
fn fnv1a(seed: u64, data: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Final avalanche (from splitmix64) so that similar names spread well.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The table size for `backends` backends: [`DEFAULT_TABLE_SIZE`], or the smallest prime at
/// least 100 × the backends when that is larger.
pub fn table_size_for(backends: usize) -> usize {
    let mut n = DEFAULT_TABLE_SIZE.max(backends.saturating_mul(100));
    while !is_prime(n) {
        n += 1;
    }
    n
}

fn is_prime(n: usize) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// A built lookup table mapping flow hashes to backends.
#[derive(Debug, Clone)]
pub struct MaglevTable {
    backends: Vec<String>,
    slots: Vec<u32>,
}

impl MaglevTable {
    /// Builds the table for `backends` with `size` slots (a prime).
    pub fn new(backends: &[String], size: usize) -> Result<Self, MaglevError> {
        if !is_prime(size) {
            return Err(MaglevError::SizeNotPrime(size));
        }
        if backends.len() > size {
            return Err(MaglevError::TooManyBackends {
                backends: backends.len(),
                size,
            });
        }
        let mut seen = std::collections::HashSet::new();
        for b in backends {
            if !seen.insert(b.as_str()) {
                return Err(MaglevError::DuplicateBackend(b.clone()));
            }
        }
        let mut slots = vec![u32::MAX; size];
        if backends.is_empty() {
            return Ok(MaglevTable {
                backends: Vec::new(),
                slots,
            });
        }
        let m = size as u64;
        let params: Vec<(u64, u64)> = backends
            .iter()
            .map(|b| {
                (
                    fnv1a(1, b.as_bytes()) % m,
                    fnv1a(2, b.as_bytes()) % (m - 1) + 1,
                )
            })
            .collect();
        let mut next = vec![0u64; backends.len()];
        let mut filled = 0;
        'fill: loop {
            for (i, (offset, skip)) in params.iter().enumerate() {
                let mut slot = ((offset + next[i] * skip) % m) as usize;
                while slots[slot] != u32::MAX {
                    next[i] += 1;
                    slot = ((offset + next[i] * skip) % m) as usize;
                }
                slots[slot] = i as u32;
                next[i] += 1;
                filled += 1;
                if filled == size {
                    break 'fill;
                }
            }
        }
        Ok(MaglevTable {
            backends: backends.to_vec(),
            slots,
        })
    }

    /// The backend for a flow key (e.g. the client's address and port), or `None` if empty.
    pub fn lookup(&self, flow_key: &[u8]) -> Option<&str> {
        if self.backends.is_empty() {
            return None;
        }
        let idx = (fnv1a(3, flow_key) % self.slots.len() as u64) as usize;
        self.backends
            .get(self.slots[idx] as usize)
            .map(String::as_str)
    }

    /// The backend for a flow key, passing over the backends `avoid` names (ones that already
    /// refused this flow): the next slots in table order decide instead, so a skipped backend's
    /// flows spread over the others. `None` if every backend is avoided.
    pub fn lookup_avoiding(&self, flow_key: &[u8], avoid: &[&str]) -> Option<&str> {
        if self.backends.is_empty() {
            return None;
        }
        let start = (fnv1a(3, flow_key) % self.slots.len() as u64) as usize;
        (0..self.slots.len())
            .map(|i| self.backends[self.slots[(start + i) % self.slots.len()] as usize].as_str())
            .find(|b| !avoid.contains(b))
    }

    /// The backends, in the order given to [`MaglevTable::new`].
    pub fn backends(&self) -> &[String] {
        &self.backends
    }

    /// How many slots each backend owns, in the order given to [`MaglevTable::new`].
    pub fn slot_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.backends.len()];
        for s in &self.slots {
            if let Some(c) = counts.get_mut(*s as usize) {
                *c += 1;
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("10.244.{}.{}:8080", i / 250, i % 250 + 1))
            .collect()
    }

    #[test]
    fn slots_are_shared_almost_evenly() {
        let t = MaglevTable::new(&names(7), 65_537).unwrap();
        let counts = t.slot_counts();
        let (min, max) = (*counts.iter().min().unwrap(), *counts.iter().max().unwrap());
        assert_eq!(counts.iter().sum::<usize>(), 65_537);
        // Maglev bounds the imbalance by one full round: max - min ≤ backends.
        assert!(max - min <= 7, "{counts:?}");
    }

    #[test]
    fn removing_a_backend_moves_few_other_flows() {
        let all = names(10);
        let before = MaglevTable::new(&all, 65_537).unwrap();
        let fewer: Vec<String> = all.iter().filter(|b| *b != &all[3]).cloned().collect();
        let after = MaglevTable::new(&fewer, 65_537).unwrap();
        let mut moved_other = 0;
        let flows = 20_000;
        for f in 0..flows {
            let key = format!("192.168.1.1:{f}");
            let (b, a) = (
                before.lookup(key.as_bytes()).unwrap(),
                after.lookup(key.as_bytes()).unwrap(),
            );
            assert_ne!(a, all[3]);
            if b != all[3] && a != b {
                moved_other += 1;
            }
        }
        // The paper reports a few percent of disruption for flows whose backend stayed.
        assert!(
            moved_other < flows / 20,
            "{moved_other} of {flows} flows moved"
        );
    }

    #[test]
    fn a_refusing_backend_is_passed_over_and_sizes_grow_with_backends() {
        let t = MaglevTable::new(&names(3), 251).unwrap();
        let first = t.lookup(b"flow").unwrap().to_string();
        let second = t.lookup_avoiding(b"flow", &[&first]).unwrap();
        assert_ne!(first, second);
        let every: Vec<String> = names(3);
        let avoid: Vec<&str> = every.iter().map(String::as_str).collect();
        assert!(t.lookup_avoiding(b"flow", &avoid).is_none());
        assert_eq!(table_size_for(3), DEFAULT_TABLE_SIZE);
        let big = table_size_for(1000);
        assert!(big >= 100_000 && is_prime(big));
    }

    #[test]
    fn lookups_are_stable_and_empty_tables_return_none() {
        let t = MaglevTable::new(&names(3), 251).unwrap();
        assert_eq!(t.lookup(b"flow"), t.lookup(b"flow"));
        assert!(MaglevTable::new(&[], 251).unwrap().lookup(b"x").is_none());
        assert_eq!(
            MaglevTable::new(&names(2), 250).unwrap_err(),
            MaglevError::SizeNotPrime(250)
        );
        let dup = vec!["a".to_string(), "a".to_string()];
        assert!(matches!(
            MaglevTable::new(&dup, 251),
            Err(MaglevError::DuplicateBackend(_))
        ));
    }
}
