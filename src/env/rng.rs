//! Seeded randomness shared by a node's components.

use std::sync::Arc;

use parking_lot::Mutex;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A ChaCha8 generator behind a mutex. In simulation it is seeded from the run's seed, so
/// every id and every random choice the node makes is reproducible.
#[derive(Clone)]
pub struct SharedRng(Arc<Mutex<ChaCha8Rng>>);

impl SharedRng {
    /// A generator with a fixed seed.
    pub fn seeded(seed: u64) -> SharedRng {
        SharedRng(Arc::new(Mutex::new(ChaCha8Rng::seed_from_u64(seed))))
    }

    /// A generator seeded from the operating system (production only).
    #[allow(clippy::disallowed_methods)] // the one sanctioned use of OS entropy
    pub fn from_os() -> SharedRng {
        SharedRng(Arc::new(Mutex::new(rand::make_rng::<ChaCha8Rng>())))
    }

    /// The next 64 random bits.
    pub fn next_u64(&self) -> u64 {
        self.0.lock().next_u64()
    }

    /// A uniformly random value below `bound` (`bound` > 0).
    pub fn below(&self, bound: u64) -> u64 {
        debug_assert!(bound > 0);
        // Multiply-shift reduction; the bias is far below anything observable here.
        ((self.next_u64() as u128 * bound as u128) >> 64) as u64
    }

    /// An independent generator derived from this one (for a subcomponent or a host).
    pub fn fork(&self) -> SharedRng {
        SharedRng::seeded(self.next_u64())
    }

    /// `n` random bytes rendered as lowercase hex, for ids.
    pub fn hex_id(&self, bytes: usize) -> String {
        let mut out = String::with_capacity(bytes * 2);
        let mut left = bytes;
        while left > 0 {
            let word = self.next_u64().to_le_bytes();
            for b in word.iter().take(left.min(8)) {
                out.push_str(&format!("{b:02x}"));
            }
            left = left.saturating_sub(8);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let a = SharedRng::seeded(7);
        let b = SharedRng::seeded(7);
        let xs: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..4).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(SharedRng::seeded(8).next_u64(), xs[0]);
    }

    #[test]
    fn hex_id_has_requested_length_and_below_is_bounded() {
        let r = SharedRng::seeded(1);
        assert_eq!(r.hex_id(10).len(), 20);
        assert!((0..1000).all(|_| r.below(3) < 3));
    }
}
