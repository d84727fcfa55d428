//! STM isolation on a real etcd (`DISTSYNC_ETCD_URL`), at every level the backend
//! declares: a write skew and a phantom (reads of absent keys) between two
//! overlapping transactions. The second transaction commits between the first's reads
//! and its commit; `ReadCommitted` lets both commit (the anomaly), every other level
//! makes the first retry, which then sees the second's write and writes nothing.

use crate::common;
use distsync_core::Primitives;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use distsync_core::{Isolation, Stm, StmOptions};

use common::{etcd_url, unique};

fn number(value: Option<Bytes>) -> i64 {
    value.map_or(0, |v| String::from_utf8_lossy(&v).parse().unwrap_or(-1))
}

/// Each transaction reads `a` and `b` and, if `allowed(a, b)`, writes `"1"` to its own
/// key; the second runs inside the first's first attempt. The first's attempts and the
/// values left.
async fn race(
    stm: &Stm,
    isolation: Isolation,
    keys: &[String; 2],
    allowed: fn(i64, i64) -> bool,
) -> (u32, i64, i64) {
    let runs = Arc::new(AtomicU32::new(0));
    let committed = stm
        .atomically_with(isolation, &StmOptions::default(), |tx| {
            let runs = Arc::clone(&runs);
            let second = stm.clone();
            let keys = keys.clone();
            async move {
                let a = number(tx.get(&keys[0]).await?);
                let b = number(tx.get(&keys[1]).await?);
                if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                    second
                        .atomically(isolation, |tx| {
                            let keys = keys.clone();
                            async move {
                                let a = number(tx.get(&keys[0]).await?);
                                let b = number(tx.get(&keys[1]).await?);
                                if allowed(a, b) {
                                    tx.put(&keys[1], "1");
                                }
                                Ok(())
                            }
                        })
                        .await?;
                }
                if allowed(a, b) {
                    tx.put(&keys[0], "1");
                }
                Ok(())
            }
        })
        .await
        .unwrap();
    let (a, b) = stm
        .atomically(isolation, |tx| {
            let keys = keys.clone();
            async move {
                Ok((
                    number(tx.get(&keys[0]).await?),
                    number(tx.get(&keys[1]).await?),
                ))
            }
        })
        .await
        .unwrap();
    (committed.attempts, a, b)
}

#[tokio::test]
async fn write_skew_and_phantoms_at_every_declared_level() {
    let Some(url) = etcd_url() else {
        return;
    };
    let namespace = unique("distsync-test/isolation");
    let backend = distsync_etcd::backend(&format!("{url}/{namespace}/"))
        .await
        .unwrap();
    let stm = backend.stm().unwrap();
    let capabilities = backend.capabilities().clone();
    let levels = [
        Isolation::SerializableSnapshot,
        Isolation::Serializable,
        Isolation::RepeatableReads,
        Isolation::ReadCommitted,
    ];
    let both_zero = |a: i64, b: i64| a == 0 && b == 0;
    for (round, isolation) in levels.into_iter().enumerate() {
        assert!(capabilities.supports_isolation(isolation), "{isolation}");
        let allows_anomalies = isolation == Isolation::ReadCommitted;
        let expected = if allows_anomalies {
            (1, 1, 1)
        } else {
            (2, 0, 1)
        };

        // Write skew: both keys exist with 0 ("on duty"); each may set its own to 1
        // only while both are 0.
        let skew = [format!("skew/{round}/a"), format!("skew/{round}/b")];
        stm.atomically(isolation, |tx| {
            let skew = skew.clone();
            async move {
                tx.put(&skew[0], "0");
                tx.put(&skew[1], "0");
                Ok(())
            }
        })
        .await
        .unwrap();
        assert_eq!(
            race(&stm, isolation, &skew, both_zero).await,
            expected,
            "{isolation}: write skew"
        );

        // Phantom: neither key exists; each creates its own only while both are absent.
        let phantom = [format!("phantom/{round}/a"), format!("phantom/{round}/b")];
        assert_eq!(
            race(&stm, isolation, &phantom, both_zero).await,
            expected,
            "{isolation}: phantom"
        );
    }
}
