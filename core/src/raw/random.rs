//! Random values for ids and jitter: SipHash keyed by the standard library's
//! per-process random keys (taken from the operating system), over a process-wide
//! counter, the wall clock and the process id.
//!
//! Distinct draws collide only by chance (2⁻⁶⁴ for a pair), and they cannot be
//! predicted without the keys. This is not a cryptographic random number generator:
//! ids only need to be unique and hard to guess by accident, and jitter only needs to
//! differ between clients. No crate is needed for that, and every store's ids draw
//! from this one source.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A random 64-bit value: SipHash keyed by the standard library's per-process random
/// keys (from the operating system) over a process-wide counter, the wall clock and the
/// process id. Not cryptographic: ids only need to be unique and hard to guess by
/// accident, and jitter only needs to differ between clients.
///
/// ```
/// use distsync::store::raw::random_u64;
///
/// assert_ne!(random_u64(), random_u64());
/// ```
pub fn random_u64() -> u64 {
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(DRAWS.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// A random fraction in `[0, 1)`, with 53 random bits (a double's precision).
pub fn random_fraction() -> f64 {
    // The top 53 bits as an integer below 2^53, scaled by 2^-53: exact, and below 1.
    #[allow(clippy::cast_precision_loss)]
    let bits = (random_u64() >> 11) as f64;
    bits / (1u64 << 53) as f64
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
