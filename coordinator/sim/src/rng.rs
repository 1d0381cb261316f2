//! The simulator's only source of randomness: a seeded ChaCha8 stream, so a
//! seed reproduces a run on any platform.

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Seeded random numbers with the few helpers the simulator needs.
#[derive(Debug, Clone)]
pub struct SimRng(ChaCha8Rng);

impl SimRng {
    /// A stream fully determined by `seed`.
    pub fn new(seed: u64) -> SimRng {
        SimRng(ChaCha8Rng::seed_from_u64(seed))
    }
    /// A uniformly random `u64`.
    pub fn u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// Uniform in `lo..=hi` (returns `lo` if `hi < lo`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.u64() % (hi - lo + 1)
    }
    /// True with probability `ppm / 1_000_000`.
    pub fn chance_ppm(&mut self, ppm: u64) -> bool {
        self.u64() % 1_000_000 < ppm
    }
    /// A uniformly chosen index below `n` (`0` if `n == 0`).
    pub fn index(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.u64() % n as u64) as usize
        }
    }
}

/// FNV-1a, used for trace hashes and batch digests: stable across runs and
/// platforms, unlike std's randomly seeded hasher.
#[derive(Debug, Clone, Copy)]
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    /// Mixes `bytes` into the hash.
    pub fn bytes(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    /// Mixes one `u64` into the hash.
    pub fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
}

/// Digest of a batch: order and boundaries of commands both count.
pub fn batch_digest(batch: &[paxlock_core::paxos::Value]) -> u64 {
    let mut h = Fnv::default();
    h.u64(batch.len() as u64);
    for v in batch {
        h.u64(v.len() as u64);
        h.bytes(v);
    }
    h.0
}
