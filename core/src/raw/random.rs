//! Random values for ids and jitter, from `fastrand`'s thread-local generator (seeded
//! from the operating system's randomness through the standard library's hasher keys).
//!
//! Distinct draws collide only by chance (2⁻⁶⁴ for a pair), and they cannot be
//! predicted without the seed. This is not a cryptographic random number generator:
//! ids only need to be unique and hard to guess by accident, and jitter only needs to
//! differ between clients. Every store's ids draw from this one source.

/// A random 64-bit value from a thread-local generator seeded from the operating
/// system's randomness. Not cryptographic: ids only need to be unique and hard to guess
/// by accident, and jitter only needs to differ between clients.
///
/// ```
/// use distsync::store::raw::random_u64;
///
/// assert_ne!(random_u64(), random_u64());
/// ```
pub fn random_u64() -> u64 {
    fastrand::u64(..)
}

/// A random fraction in `[0, 1)`, from the same generator as [`random_u64`].
pub fn random_fraction() -> f64 {
    fastrand::f64()
}

#[cfg(test)]
mod tests {
    use super::{random_fraction, random_u64};

    #[test]
    fn draws_differ() {
        let draws: std::collections::BTreeSet<u64> = (0..1000).map(|_| random_u64()).collect();
        assert_eq!(draws.len(), 1000);
    }

    #[test]
    fn fractions_are_below_one_and_spread() {
        let fractions: Vec<f64> = (0..1000).map(|_| random_fraction()).collect();
        assert!(fractions.iter().all(|f| (0.0..1.0).contains(f)));
        // 1,000 uniform draws all in one half has probability 2^-999.
        assert!(fractions.iter().any(|f| *f < 0.5));
        assert!(fractions.iter().any(|f| *f >= 0.5));
    }
}
