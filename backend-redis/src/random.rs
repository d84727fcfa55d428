//! Random values for identities that must never repeat: session ids, session nonces
//! and client instance ids.
//!
//! A Redis counter (`INCR`) starts again from 1 after a restart without persistence or
//! a failover to a replica that had not seen the latest increments, so an id drawn
//! from one could be handed out twice: a holder whose session vanished would then
//! renew its successor's. These ids are drawn on the client instead, from SipHash
//! keyed by the standard library's per-process random keys (taken from the operating
//! system), over a process-wide counter, the wall clock and the process id: distinct
//! draws collide only by chance (2⁻⁶³ for a pair), and they cannot be predicted
//! without the keys. This is not a cryptographic random number generator; the ids
//! only need to be unique, and hard to guess by accident.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static DRAWS: AtomicU64 = AtomicU64::new(0);

/// A random 64-bit value.
pub(crate) fn u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(DRAWS.fetch_add(1, Ordering::Relaxed));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    hasher.write_u128(now);
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// A random id in `1..=i64::MAX` (63 random bits, never 0), so that it reads the same
/// wherever it is taken for a signed number.
pub(crate) fn id() -> u64 {
    loop {
        let id = u64() >> 1;
        if id != 0 {
            return id;
        }
    }
}

/// 128 random bits as 32 lowercase hex digits.
pub(crate) fn nonce() -> String {
    format!("{:016x}{:016x}", u64(), u64())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    #[test]
    fn draws_do_not_repeat() {
        let ids: HashSet<u64> = (0..10_000).map(|_| super::id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids.iter().all(|&id| id != 0 && id <= i64::MAX as u64));
        // Not all in a narrow band: the high bits vary too.
        assert!(ids.iter().any(|&id| id > 1 << 62));
        let nonce = super::nonce();
        assert_eq!(nonce.len(), 32);
        assert_ne!(nonce, super::nonce());
    }

    #[test]
    fn threads_draw_distinct_ids() {
        let draws: Vec<Vec<u64>> = (0..4)
            .map(|_| std::thread::spawn(|| (0..1000).map(|_| super::id()).collect()))
            .map(|thread| thread.join().unwrap())
            .collect();
        let all: HashSet<u64> = draws.into_iter().flatten().collect();
        assert_eq!(all.len(), 4000);
    }
}
