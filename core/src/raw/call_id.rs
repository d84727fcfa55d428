//! Call ids: names that make a store call idempotent.

/// A fresh call id (32 lowercase hex digits) that no other call, in this process or
/// another, draws except by chance (2⁻¹²⁸ for a pair): two SipHash outputs keyed by the
/// standard library's per-process random keys (from the operating system) over a
/// process-wide counter, the clock and the process id. Not cryptographic; ids only need
/// to be unique.
pub fn call_id() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};

    static DRAWS: AtomicU64 = AtomicU64::new(0);
    let draw = DRAWS.fetch_add(1, Ordering::Relaxed);
    let half = |salt: u8| {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u8(salt);
        hasher.write_u64(draw);
        hasher.write_i128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |elapsed| {
                    i128::try_from(elapsed.as_nanos()).unwrap_or(i128::MAX)
                }),
        );
        hasher.write_u32(std::process::id());
        hasher.finish()
    };
    format!("{:016x}{:016x}", half(0), half(1))
}

#[cfg(test)]
mod tests {
    use super::call_id;

    #[test]
    fn call_ids_differ() {
        let ids: std::collections::BTreeSet<String> = (0..1000).map(|_| call_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| id.len() == 32));
    }
}
