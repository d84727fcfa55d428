//! Call ids: names that make a store call idempotent.

use super::random::random_u64;

/// A fresh call id (32 lowercase hex digits) that no other call, in this process or
/// another, draws except by chance (2⁻¹²⁸ for a pair): two draws of [`random_u64`].
/// Not cryptographic; ids only need to be unique.
pub fn call_id() -> String {
    format!("{:016x}{:016x}", random_u64(), random_u64())
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
