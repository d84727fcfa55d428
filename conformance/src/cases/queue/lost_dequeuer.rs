//! The fault of the cases on a dequeuer lost between its claim and the hand-over. An
//! at-most-once `dequeue` claims its item in the store, then hands it over to its
//! caller; a dequeuer whose process dies in between (or whose store becomes unreachable
//! for good) leaves its claim behind.
//!
//! The fault: a dequeuer behind a partition proxy (the memory store's gate), its
//! client readied by a `try_dequeue` of another queue, has the store's answer number
//! `k` of its `try_dequeue` dropped, and from then on every
//! connection reset and every new one refused, so neither the hand-over nor its own
//! cancel-time put-back can land; then, [`GIVE_UP`] after it started, it is dropped
//! with its client, whatever it is still doing. From the store's side that is a
//! claimer that died. One cut point is not enough on every store: which answer
//! carries the claim's reply (after reads, a script load, a prepared statement)
//! differs from store to store, so [`scan_cut_points`] cuts after answer 0, 1, 2, ...
//! in turn, a fresh queue and dequeuer each round, until the dequeuer gets its item
//! (the cut came after the hand-over). A cut before the claim leaves the item in the
//! queue; a cut at the claim's reply leaves it claimed: each case judges every round
//! whose dequeuer did not get its item ([`Judge`]). The proxy way is in process and
//! deterministic (a cut point is an answer count, not a moment); killing a child
//! process would leave the moment of the kill to the scheduler.

use std::time::Duration;

use distsync_core::{Bytes, Name};
use tokio::time::Instant;

use crate::check::{ensure, proxied_client, set_up, Bounded, Check, Context, Fail};
use crate::faults::PartitionMode;
use crate::harness::Harness;

/// How long the dequeuer is given before it is dropped: its claim's answer, lost or
/// not, has come by then on an idle machine; a dequeuer still resolving a lost reply
/// (asking a store it cannot reach) is dropped as a process that died would be.
pub(super) const GIVE_UP: Duration = Duration::from_secs(1);

/// The lost dequeuer's `timeout=`: long enough for its warm-up's requests on a loaded
/// machine (a MySQL transaction of a new client took over 500 ms three times running
/// beside two CPU hogs, a disk hog and three columns of fault cases). After the cut it
/// does not matter: the lost answer's connection is reset at once and every other one
/// with it, new ones are refused, and the dequeuer is dropped at [`GIVE_UP`] whatever
/// it is still waiting for.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The lost dequeuer's `connect_timeout=`: its set-up opens connections on a machine
/// that may be loaded (a MySQL pool waits for its connection that long), while after
/// the cut a new connection is refused at once, so a long bound costs the case nothing.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The most cut points tried: more than the answers one `try_dequeue` of a warmed-up
/// client takes on any store.
const MAX_CUTS: u8 = 24;

/// The most scans over the cut points (see [`scan_cut_points`]).
const SCANS: usize = 3;

/// One round whose dequeuer did not get its item: its queue, as the cut left it.
pub(super) struct LostRound {
    /// The answer of the dequeuer's `try_dequeue` after which the proxy cut.
    pub(super) cut: u8,
    /// The round's queue, of its own.
    pub(super) queue: Name,
    /// The queue's head, the item the dequeuer was taking.
    pub(super) item: Bytes,
    /// The items enqueued behind the head, in order.
    pub(super) behind: Vec<Bytes>,
    /// When the lost dequeue started.
    pub(super) started: Instant,
}

/// What a case checks of each round whose dequeuer did not get its item.
pub(super) trait Judge {
    /// Checks the round; `Ok(true)` when its cut came at the claim's reply (the claim
    /// was left behind), `Ok(false)` when it came before the claim (the item stayed).
    async fn judge(&mut self, round: LostRound) -> Check<bool>;
}

/// Loses a dequeuer at every cut point in turn (see the module docs), each round's
/// queue named `<label>-<round>` and holding its head and `behind` items more, and has
/// `judge` check every round whose dequeuer did not get its item. Scans again, at most
/// [`SCANS`] times in all, while no round left a claim behind. Returns how many rounds
/// ran.
///
/// # Errors
/// The judge's, or the round's; [`Fail::SetUpLapsed`] when no scan left a claim
/// behind (the fault did not land).
pub(super) async fn scan_cut_points(
    h: &Harness,
    label: &str,
    behind: usize,
    judge: &mut impl Judge,
) -> Check<usize> {
    let timeouts = format!(
        "timeout={}ms&connect_timeout={}ms",
        REQUEST_TIMEOUT.as_millis(),
        CONNECT_TIMEOUT.as_millis()
    );
    let mut rounds = 0;
    // A scan measures nothing when background answers of the client (a reaper's, a
    // ping's) took every cut point meant for the claim's reply: another scan then cuts
    // again, every round of every scan judged the same way.
    for _ in 0..SCANS {
        let mut claims_left = 0;
        for cut in 0..MAX_CUTS {
            let round = rounds;
            rounds += 1;
            let Some(lost) = lose_dequeuer(h, label, round, cut, behind, &timeouts).await? else {
                // The cut came after the hand-over: past the fault this case injects.
                break;
            };
            if judge.judge(lost).await? {
                claims_left += 1;
            }
        }
        if claims_left > 0 {
            return Ok(rounds);
        }
    }
    // Every at-most-once dequeue claims before it hands over, so one of the answers
    // before the hand-over is the claim's: scans that cut none of them at the claim
    // measured nothing.
    Err(Fail::SetUpLapsed(format!(
        "the fault did not land: none of {rounds} cut points in {SCANS} scans left a claim \
         behind"
    )))
}

/// Round `round`: a fresh queue, its dequeuer cut after answer `cut`; `None` when the
/// dequeuer got its item anyway (the cut came after the hand-over).
async fn lose_dequeuer(
    h: &Harness,
    label: &str,
    round: usize,
    cut: u8,
    behind: usize,
    timeouts: &str,
) -> Check<Option<LostRound>> {
    let queue = h
        .name(&format!("{label}-{round}"))
        .ctx("naming the queue")?;
    let item = Bytes::from(format!("item-{cut}"));
    let behind: Vec<Bytes> = (0..behind)
        .map(|n| Bytes::from(format!("item-{cut}-behind-{n}")))
        .collect();
    let producer = h
        .backend()
        .queue(queue.clone())
        .ctx("making the producer")?;
    for enqueued in std::iter::once(&item).chain(&behind) {
        producer
            .enqueue(enqueued.clone())
            .bounded("enqueueing")
            .await?;
    }
    // A first try_dequeue, of another queue, opens the client's connections and
    // readies its statements and scripts, so that the answers counted to the cut are
    // the dequeue's own. Under the client's short `timeout=` a loaded machine can
    // lapse it: that is before the fault, so it starts again with a new client.
    let lost = set_up("warming up the dequeuer's client", |attempt| async move {
        let lost =
            proxied_client(h.faults(), h.backend().as_ref(), timeouts, "the dequeuer").await?;
        let warm = h
            .name(&format!("{label}-warm-{round}-{attempt}"))
            .ctx("naming the warm-up queue")?;
        lost.backend()
            .queue(warm)
            .ctx("making the warm-up queue")?
            .try_dequeue()
            .set_up("warming up the dequeuer's client")
            .await?;
        Ok(lost)
    })
    .await?;
    let dequeuer = lost
        .backend()
        .queue(queue.clone())
        .ctx("making the dequeuer")?;
    lost.set(PartitionMode::LoseReplyThenReset { after: cut });
    let started = Instant::now();
    let dequeued = tokio::time::timeout(GIVE_UP, dequeuer.try_dequeue()).await;
    // The dequeuer and its client go: their connections are cut for good, so nothing
    // they left running reaches the store.
    drop(dequeuer);
    drop(lost);
    if let Ok(Ok(Some(got))) = dequeued {
        ensure!(
            got == item,
            "cut after answer {cut}: the dequeuer got {got:?}, expected {item:?}"
        );
        return Ok(None);
    }
    Ok(Some(LostRound {
        cut,
        queue,
        item,
        behind,
        started,
    }))
}
