//! A counting gate for the heavy part of starting pods (sandbox, CNI `ADD`, container
//! creation). Starting dozens at once on a small node makes them fight over kernel locks
//! (RTNL, the mount namespace lock) and lose more time than they overlap; a few at a time
//! finishes the whole burst sooner. The rest of a sync (status, probes) is not gated.

use std::sync::{Condvar, Mutex};

/// At most `limit` holders at a time.
#[derive(Debug)]
pub struct Gate {
    held: Mutex<usize>,
    freed: Condvar,
    limit: usize,
}

/// One place in the gate, given back on drop.
pub struct Pass<'a>(&'a Gate);

impl Gate {
    /// A gate of `limit` places (at least one).
    pub fn new(limit: usize) -> Gate {
        Gate {
            held: Mutex::new(0),
            freed: Condvar::new(),
            limit: limit.max(1),
        }
    }

    /// Two places per CPU.
    pub fn per_cpu() -> Gate {
        Gate::new(2 * std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// Waits for a place.
    pub fn enter(&self) -> Pass<'_> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        while *held >= self.limit {
            held = self.freed.wait(held).unwrap_or_else(|e| e.into_inner());
        }
        *held += 1;
        Pass(self)
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        let mut held = self.0.held.lock().unwrap_or_else(|e| e.into_inner());
        *held -= 1;
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn never_more_than_the_limit_inside() {
        let gate = Arc::new(Gate::new(2));
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (gate, inside, most) = (gate.clone(), inside.clone(), most.clone());
                std::thread::spawn(move || {
                    let _pass = gate.enter();
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    inside.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
    }
}
