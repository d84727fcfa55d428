//! Transactions on a client cut off for longer than a session: a transaction holds no
//! session of its caller's, so whatever a backend keeps open for it (ZooKeeper's
//! session of no distsync session) may end under a cut, and the caller must see only
//! what the cut is, a connection error or a timeout, and transactions that commit again
//! once the client is back.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use distsync_core::{Error, Isolation, Result, Stm};
use tokio::time::Instant;

use super::super::counter::SESSION_END_CUT;
use crate::check::{
    ensure, partitioned_client_with_timeouts, retry_transient, violated, Bounded as _, Check,
    Context, Holds, Task, PROMPT,
};
use crate::faults::PartitionMode;
use crate::harness::Harness;

/// The cut-off client's request timeout: longer than the cut, so that a request sent
/// as the cut begins can outlive a session that ends during it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The cut-off client's connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A client through the proxy commits a transaction; then its connections are cut
/// (reset in the first round, silenced in the second) for [`SESSION_END_CUT`], and a
/// transaction started as the cut begins, whose requests may wait longer than the cut,
/// must end with a connection error or a timeout (or commit, once the cut heals), never
/// with the loss of a session, which its caller does not hold. After the heal, the client's next
/// transaction commits within [`PROMPT`] of retrying transient errors, and another
/// client reads its value.
pub(super) async fn across_session_end(h: Harness) -> Check {
    let key = h.key("cut-off");
    let partition = partitioned_client_with_timeouts(&h, REQUEST_TIMEOUT, CONNECT_TIMEOUT).await?;
    let cut = partition.backend().stm().ctx("the cut-off client's STM")?;
    let reader = h.backend().stm().ctx("the other client's STM")?;
    let mut committed_after = Vec::new();
    let transient = AtomicUsize::new(0);
    for (round, mode) in [PartitionMode::Reset, PartitionMode::Silent]
        .into_iter()
        .enumerate()
    {
        put(&cut, &key, format!("before-{round}"))
            .bounded("a transaction through the proxy before the cut")
            .await?;
        partition.set(mode);
        let mut during = {
            let (cut, key) = (cut.clone(), key.clone());
            Task::spawn(
                format!("the transaction of round {round}'s cut"),
                async move { Ok(put(&cut, &key, format!("during-{round}")).await) },
            )
        };
        tokio::time::sleep(SESSION_END_CUT).await;
        partition.set(PartitionMode::Forward);
        let healed = Instant::now();
        // Its client's requests time out within REQUEST_TIMEOUT of the cut.
        match during.join(REQUEST_TIMEOUT + PROMPT).await? {
            Ok(()) => {}
            Err(error) if error.is_transient() || error.is_timeout() => {}
            Err(error) => {
                return violated(format!(
                    "round {round}: a transaction started as the client was cut off ({mode:?}) \
                     failed with `{error}`, not a connection error or a timeout"
                ))
            }
        }
        let after = format!("after-{round}");
        retry_transient(&transient, PROMPT, || put(&cut, &key, after.clone()))
            .await
            .ctx(format!(
                "round {round}: the cut-off client's transaction after the heal ({mode:?})"
            ))?;
        committed_after.push(healed.elapsed().as_millis());
        let read = get(&reader, &key)
            .bounded("reading the key through the other client")
            .await?;
        ensure!(
            read.as_deref() == Some(after.as_str()),
            "round {round}: the other client read {read:?} after the cut-off client committed \
             {after:?}"
        );
    }
    Ok(Holds::figure(
        format!(
            "committed {committed_after:?} ms after the heals ({} transient errors retried)",
            transient.load(Ordering::SeqCst)
        ),
        format!(
            "a client cut off for {} s (reset, then silenced): its transaction during the cut \
             ended with a connection error or a timeout, and after each heal its next \
             transaction committed",
            SESSION_END_CUT.as_secs()
        ),
    ))
}

/// Puts `value` under `key` in one transaction.
async fn put(stm: &Stm, key: &str, value: String) -> Result<()> {
    stm.atomically(Isolation::SerializableSnapshot, |tx| {
        let value = value.clone();
        async move {
            tx.put(key, value);
            Ok(())
        }
    })
    .await
}

/// `key`'s value as text, in one transaction.
async fn get(stm: &Stm, key: &str) -> std::result::Result<Option<String>, Error> {
    stm.atomically(Isolation::SerializableSnapshot, |tx| async move {
        Ok(tx
            .get(key)
            .await?
            .map(|value| String::from_utf8_lossy(&value).into_owned()))
    })
    .await
}
