//! Key naming and creation shared by the recipes, as etcd's Go `recipes/key.go`.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::kv::{Compare, CompareOp, Kv, LeaseId, Revision, Txn, TxnOp, TxnResponse};

/// A lease id as Go's `fmt.Sprintf("%x", leaseID)` writes it: lowercase hexadecimal,
/// with a `-` sign for (never granted) negative ids.
pub(crate) fn lease_hex(lease: LeaseId) -> String {
    if lease < 0 {
        format!("-{:x}", lease.unsigned_abs())
    } else {
        format!("{lease:x}")
    }
}

/// Nanoseconds since the Unix epoch, as Go's `time.Now().UnixNano()` (0 if the clock
/// is before the epoch; uniqueness is enforced by the store anyway).
fn unix_nanos() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i128::try_from(elapsed.as_nanos()).unwrap_or(i128::MAX))
        .unwrap_or(0)
}

/// Candidate names for a unique key under `prefix`: `<prefix>/<unix nanos>`, as Go's
/// `newUniqueKV` and `newUniqueEphemeralKV`; each candidate is later than the last
/// one even if the clock stands still or goes back.
pub(crate) struct UniqueKeys {
    prefix: String,
    last: i128,
}

impl UniqueKeys {
    /// Names under `prefix` (without the trailing `/`).
    pub(crate) fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            last: i128::MIN,
        }
    }

    /// The next candidate.
    pub(crate) fn next_key(&mut self) -> String {
        let nanos = unix_nanos().max(self.last.saturating_add(1));
        self.last = nanos;
        format!("{}/{}", self.prefix, nanos)
    }
}

/// Puts `key` only if it does not exist (Go's `putNewKV`: `version(key) == 0`).
/// Returns the revision that created it, or `None` if it already existed.
pub(crate) async fn put_new_key(
    kv: &dyn Kv,
    key: &str,
    value: Bytes,
    lease: LeaseId,
) -> Result<Option<Revision>> {
    let txn = Txn::when(vec![Compare::version(key, CompareOp::Equal, 0)])
        .and_then(vec![TxnOp::put(key, value, lease)]);
    let response = kv.txn(txn).await?;
    Ok(response.succeeded.then_some(response.revision))
}

/// Deletes `key` if it was created at `create_revision`; whether it was.
pub(crate) async fn delete_if_created_at(
    kv: &dyn Kv,
    key: &str,
    create_revision: Revision,
) -> Result<bool> {
    let txn = Txn::when(vec![Compare::create_revision(
        key,
        CompareOp::Equal,
        create_revision,
    )])
    .and_then(vec![TxnOp::delete(key)]);
    Ok(kv.txn(txn).await?.succeeded)
}

/// The range answer at `index` of a transaction the recipe built itself; a store that
/// answers with another shape gets a typed error instead of a panic.
pub(crate) fn range_at(
    kv: &dyn Kv,
    response: &TxnResponse,
    index: usize,
) -> Result<crate::kv::RangeResponse> {
    response.range(index).cloned().ok_or_else(|| {
        Error::backend(
            kv.backend(),
            format!("transaction answer has no range at position {index}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_ids_are_written_as_go_does() {
        assert_eq!(lease_hex(0x694d_7a3c_1b2e_0f01), "694d7a3c1b2e0f01");
        assert_eq!(lease_hex(255), "ff");
        assert_eq!(lease_hex(-255), "-ff");
    }

    #[test]
    fn unique_keys_increase() {
        let mut keys = UniqueKeys::new("lock/read");
        let a = keys.next_key();
        let b = keys.next_key();
        assert!(a.starts_with("lock/read/"));
        let n = |k: &str| k.rsplit('/').next().unwrap().parse::<i128>().unwrap();
        assert!(n(&b) > n(&a));
    }
}
