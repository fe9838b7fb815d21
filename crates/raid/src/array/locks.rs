//! Stripe locks shared by every channel of an array and its control thread.
//!
//! A fixed table of atomic words; a key (stripe window or mirror region)
//! hashes to one word, which holds `key + 1` while locked and 0 when free.
//! Taking a lock is one compare-and-swap that never waits: a caller that
//! fails queues its operation and retries from its next poll. Two keys
//! hashing to the same word simply serialise.

use std::sync::atomic::{AtomicU64, Ordering};

/// Number of lock words (a power of two).
const SLOTS: usize = 4096;

/// The lock table.
pub(crate) struct StripeLocks {
    words: Box<[AtomicU64]>,
}

impl StripeLocks {
    pub(crate) fn new() -> StripeLocks {
        StripeLocks { words: (0..SLOTS).map(|_| AtomicU64::new(0)).collect() }
    }

    fn word(&self, key: u64) -> Option<&AtomicU64> {
        // Fibonacci hashing spreads consecutive stripes over the table.
        let h = key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 52;
        self.words.get(h as usize & (SLOTS - 1))
    }

    /// Takes the lock of `key` if it is free.
    pub(crate) fn try_lock(&self, key: u64) -> bool {
        self.word(key)
            .is_some_and(|w| w.compare_exchange(0, key.wrapping_add(1), Ordering::Acquire, Ordering::Relaxed).is_ok())
    }

    /// Releases the lock of `key` (taken with [`StripeLocks::try_lock`]).
    pub(crate) fn unlock(&self, key: u64) {
        if let Some(w) = self.word(key) {
            let _ = w.compare_exchange(key.wrapping_add(1), 0, Ordering::Release, Ordering::Relaxed);
        }
    }

    /// Takes the lock, spinning and yielding (control thread only).
    pub(crate) fn lock_blocking(&self, key: u64) {
        while !self.try_lock(key) {
            std::thread::yield_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_unlock() {
        let l = StripeLocks::new();
        assert!(l.try_lock(5));
        assert!(!l.try_lock(5));
        assert!(l.try_lock(6));
        l.unlock(5);
        assert!(l.try_lock(5));
        // Unlocking a key that is not held changes nothing.
        l.unlock(7);
        assert!(!l.try_lock(6));
    }
}
