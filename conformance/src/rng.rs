//! A tiny deterministic pseudo-random generator for cases that pick at random.

/// A tiny deterministic pseudo-random generator (xorshift64*), so cases that pick
/// accounts or timeouts at random need no extra dependency and can be replayed.
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value; zero is remapped).
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next number.
    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `bound` (which must be non-zero).
    pub(crate) fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound.max(1) as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_in_bounds() {
        let mut rng = Rng::new(0);
        for _ in 0..1000 {
            assert!(rng.below(5) < 5);
        }
    }
}
