//! An `ack` whose reply is lost, with its session ended before the ack can be repeated:
//! the partition starts between the ack reaching the store and its answer, and lasts
//! until the consumer's session is lost. The ack then cannot learn its outcome through
//! its own session, and its answer must still be true:
//!
//! - `Ok`: the item is gone, and is never delivered again;
//! - [`Error::SessionLost`] (or any error that says nothing applied): the item is back
//!   in the queue, and is delivered again;
//! - an error that may have applied ([`Error::may_have_applied`], e.g. a connection
//!   error): either.
//!
//! A backend that answers `SessionLost` once its session is gone, without asking the
//! store whether the lost reply's ack applied, loses an item its caller believes is
//! back in the queue.

use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use distsync_core::{Error, SessionOptions};

use crate::check::{
    ensure, ms, partitioned_client_with_timeouts, retry_transient, set_up, violated, within_set_up,
    Bounded, Check, Context, Holds, LONG, PROMPT,
};
use crate::faults::PartitionMode;
use crate::harness::Harness;

/// Rounds of receive, ack cut off, session lost.
const ROUNDS: usize = 3;

/// The cut-off client's `timeout=` and `connect_timeout=`.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(500);

/// How each round's ack ended.
#[derive(Default)]
struct Tally {
    acked: usize,
    refused: usize,
    unknown: usize,
}

/// See the module docs.
pub(super) async fn ack_reply_lost_then_session_end(h: Harness) -> Check {
    let name = h.name("acks").ctx("naming the queue")?;
    let direct = h.backend().queue(name.clone()).ctx("making the queue")?;
    let ttl = h.fault_ttl();
    // Long enough for the store to end the consumer's session (its TTL past the last
    // renewal, which the client declares lost before the store does) and hand the
    // item back.
    let back_within = ttl * 2 + h.settle();
    let mut tally = Tally::default();
    for round in 0..ROUNDS {
        let partition =
            partitioned_client_with_timeouts(&h, REQUEST_TIMEOUT, REQUEST_TIMEOUT).await?;
        let cut = partition
            .backend()
            .queue(name.clone())
            .ctx("making the consumer's queue")?;
        let item = format!("item-{round}");
        direct.enqueue(item.clone()).bounded("enqueueing").await?;
        // The set-up comes before any fault: a session that a loaded machine lets lapse
        // while it receives (its short TTL through the proxy) measures nothing of the ack,
        // so the consumer opens another and receives again, the item back by then.
        let (session, delivery) = set_up(format!("round {round}"), |attempt| {
            let consumer = partition.backend();
            let cut = &cut;
            async move {
                // Its connection through the proxy, opened within the short
                // `connect_timeout` on a loaded machine, is set-up too: tried again while
                // it fails to connect.
                let session = within_set_up(
                    LONG,
                    "opening the consumer's session",
                    retry_transient(&AtomicUsize::new(0), LONG, || {
                        consumer.session(SessionOptions::with_ttl(ttl))
                    }),
                )
                .await?;
                let limit = if attempt == 1 {
                    PROMPT
                } else {
                    back_within + PROMPT
                };
                // Before the fault, a receive slower than its bound (stretched by the
                // time the machine was starved), a lapsed session or a transient error
                // say nothing of the ack: the set-up starts again.
                let receiving = cut.receive(&session);
                let received = within_set_up(limit, "the consumer receiving", receiving).await?;
                Ok((session, received))
            }
        })
        .await?;
        ensure!(
            delivery.item().as_ref() == item.as_bytes(),
            "round {round}: received {:?}, expected {item}",
            delivery.item()
        );
        partition.set(PartitionMode::LoseReplyThenReset { after: 0 });
        let Ok(acked) = tokio::time::timeout(LONG, delivery.ack()).await else {
            return violated(format!(
                "round {round}: the ack cut off from the store did not return within {}",
                ms(LONG)
            ));
        };
        if tokio::time::timeout(LONG, session.lost()).await.is_err() {
            return violated(format!(
                "round {round}: the consumer's session, cut off from the store, was not \
                 lost within {}",
                ms(LONG)
            ));
        }
        partition.set(PartitionMode::Forward);
        drop(cut);
        drop(partition);
        let witness = h.session().set_up("opening the witness's session").await?;
        let again = distsync_core::timeout(back_within, direct.receive(&witness)).await;
        let back = match again {
            Ok(delivery) => {
                ensure!(
                    delivery.item().as_ref() == item.as_bytes(),
                    "round {round}: the witness received {:?}, expected {item}",
                    delivery.item()
                );
                delivery.ack().bounded("the witness acknowledging").await?;
                true
            }
            Err(Error::Timeout(_)) => false,
            Err(error) => return Err(error).ctx("the witness receiving"),
        };
        match acked {
            Ok(()) if back => {
                return violated(format!(
                    "round {round}: the ack returned Ok, and the item was delivered again"
                ))
            }
            Ok(()) => tally.acked += 1,
            Err(error) if error.may_have_applied() && !matches!(error, Error::SessionLost) => {
                tally.unknown += 1;
            }
            Err(error) if !back => {
                return violated(format!(
                    "round {round}: the ack answered \"{error}\" (nothing applied, the item \
                     goes back), but the item did not come back within {}",
                    ms(back_within)
                ))
            }
            Err(_) => tally.refused += 1,
        }
        drop(witness);
    }
    Ok(Holds::figure(
        format!(
            "{ROUNDS} acks cut off before their reply: {} Ok (item gone), {} refused (item \
             back), {} may have applied",
            tally.acked, tally.refused, tally.unknown
        ),
        "an ack whose reply is lost and whose session then ends answers truthfully",
    ))
}
