//! A dequeuer lost between its claim and the hand-over. An at-most-once `dequeue`
//! claims its item in the store, then hands it over to its caller; a dequeuer whose
//! process dies in between (or whose store becomes unreachable for good) leaves its
//! claim behind, and any consumer of the queue must put the item back once the claim
//! is older than the stale bound (`stale_claim=`), and deliver it once.
//!
//! The fault: a dequeuer behind a partition proxy (the memory store's gate), its
//! client readied by a `try_dequeue` of another queue, has the store's answer number
//! `k` of its `try_dequeue` dropped, and from then on every
//! connection reset and every new one refused, so neither the hand-over nor its own
//! cancel-time put-back can land; then, [`GIVE_UP`] after it started, it is dropped
//! with its client, whatever it is still doing. From the store's side that is a
//! claimer that died. One cut point is not enough on every store: which answer
//! carries the claim's reply (after reads, a script load, a prepared statement)
//! differs from store to store, so the case cuts after answer 0, 1, 2, ... in turn,
//! a fresh queue and dequeuer each round, until the dequeuer gets its item (the cut
//! came after the hand-over). A cut before the claim leaves the item in the queue; a
//! cut at the claim's reply leaves it claimed: another consumer, whose URL gives a
//! short `stale_claim=`, must then get it once the claim is stale, not before, and
//! only once. The proxy way is in process and deterministic (a cut point is an
//! answer count, not a moment); killing a child process would leave the moment of
//! the kill to the scheduler.

use std::time::Duration;

use distsync_core::raw::QUEUE_WAITER_TTL;
use distsync_core::Bytes;
use tokio::time::Instant;

use crate::check::{
    ensure, ms, proxied_client, set_up, violated, within, Bounded, Check, Context, Fail, Holds,
};
use crate::faults::{PartitionMode, Partitioned};
use crate::harness::Harness;

/// The stale bound of the consumer that puts the claim back: short, so the case is
/// quick, and well above [`GIVE_UP`], so that the other consumer's first look comes
/// before the claim can be stale.
const STALE_CLAIM: Duration = Duration::from_secs(3);

/// How long the dequeuer is given before it is dropped: its claim's answer, lost or
/// not, has come by then on an idle machine; a dequeuer still resolving a lost reply
/// (asking a store it cannot reach) is dropped as a process that died would be.
const GIVE_UP: Duration = Duration::from_secs(1);

/// The lost dequeuer's `timeout=`: it gives up soon after the cut.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(500);

/// The lost dequeuer's `connect_timeout=`: its set-up opens connections on a machine
/// that may be loaded (a MySQL pool waits for its connection that long), while after
/// the cut a new connection is refused at once, so a long bound costs the case nothing.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The most cut points tried: more than the answers one `try_dequeue` of a warmed-up
/// client takes on any store.
const MAX_CUTS: u8 = 24;

/// The most scans over the cut points (see [`scan`]).
const SCANS: usize = 3;

/// How early a put-back may seem by this process's clock: the claim's time is read
/// in whole milliseconds, on the store's clock on some stores.
const CLOCK_GRAIN: Duration = Duration::from_millis(100);

/// How each round ended.
#[derive(Default)]
struct Tally {
    /// The rounds run, over every scan: each names its queues by its number.
    rounds: usize,
    /// The cut came before the claim: the item stayed in the queue.
    before_claim: usize,
    /// The claim landed and its reply was lost: the item came back once stale.
    put_back: usize,
    /// The item was there at the other consumer's first look, but that look came
    /// late (a loaded machine), when the claim, if any, could already be stale.
    late_look: usize,
    /// The slowest put-back, from the dequeue's start to the other consumer's delivery.
    slowest: Duration,
}

/// See the module docs.
pub(super) async fn dequeuer_lost_mid_claim(h: Harness) -> Check {
    let settings = format!("stale_claim={}ms", STALE_CLAIM.as_millis());
    let sweeping = proxied_client(
        h.faults(),
        h.backend().as_ref(),
        &settings,
        "the consumer that puts claims back",
    )
    .await?;
    let timeouts = format!(
        "timeout={}ms&connect_timeout={}ms",
        REQUEST_TIMEOUT.as_millis(),
        CONNECT_TIMEOUT.as_millis()
    );
    // Claimed and stale, the item comes to a waiting consumer once its claim is older
    // than STALE_CLAIM, by the consumer's next look: the stale claim's own due time,
    // or at the latest its renewal in the line of waiters.
    let back_within = STALE_CLAIM + QUEUE_WAITER_TTL + h.settle();
    let mut tally = Tally::default();
    // A scan measures nothing of the sweep when background answers of the client (a
    // reaper's, a ping's) took every cut point meant for the claim's reply: another
    // scan then cuts again, every round of every scan judged the same way.
    for _ in 0..SCANS {
        if tally.put_back > 0 {
            break;
        }
        scan(&h, &*sweeping, &timeouts, back_within, &mut tally).await?;
    }
    if tally.put_back == 0 {
        // Every at-most-once dequeue claims before it hands over, so one of the answers
        // before the hand-over is the claim's: scans that cut none of them at the claim
        // measured nothing of the sweep.
        return Err(Fail::SetUpLapsed(format!(
            "the fault did not land: none of {} cut points in {SCANS} scans left a claim \
             behind",
            tally.rounds
        )));
    }
    Ok(Holds::figure(
        format!(
            "{} cut points: {} before the claim (the item stayed), {} at the claim (put back \
             once stale, at most {} after the dequeue started; stale_claim {}), {} looked at \
             late",
            tally.rounds,
            tally.before_claim,
            tally.put_back,
            ms(tally.slowest),
            ms(STALE_CLAIM),
            tally.late_look
        ),
        "a dequeuer lost between its claim and the hand-over loses nothing: another consumer \
         gets the item once the claim is stale, once",
    ))
}

/// One scan: cuts after answer 0, 1, 2, ... of a fresh dequeuer each, until one gets its
/// item or [`MAX_CUTS`].
async fn scan(
    h: &Harness,
    sweeping: &dyn Partitioned,
    timeouts: &str,
    back_within: Duration,
    tally: &mut Tally,
) -> Check<()> {
    for cut in 0..MAX_CUTS {
        let round = tally.rounds;
        tally.rounds += 1;
        let name = h
            .name(&format!("lost-mid-claim-{round}"))
            .ctx("naming the queue")?;
        let item = Bytes::from(format!("item-{cut}"));
        let producer = h.backend().queue(name.clone()).ctx("making the producer")?;
        producer.enqueue(item.clone()).bounded("enqueueing").await?;
        // A first try_dequeue, of another queue, opens the client's connections and
        // readies its statements and scripts, so that the answers counted to the cut
        // are the dequeue's own. Under the client's short `timeout=` a loaded machine
        // can lapse it: that is before the fault, so it starts again with a new client.
        let lost = set_up("warming up the dequeuer's client", |attempt| async move {
            let lost =
                proxied_client(h.faults(), h.backend().as_ref(), timeouts, "the dequeuer").await?;
            let warm = h
                .name(&format!("lost-mid-claim-warm-{round}-{attempt}"))
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
            .queue(name.clone())
            .ctx("making the dequeuer")?;
        lost.set(PartitionMode::LoseReplyThenReset { after: cut });
        let started = Instant::now();
        let dequeued = tokio::time::timeout(GIVE_UP, dequeuer.try_dequeue()).await;
        // The dequeuer and its client go: their connections are cut for good, so
        // nothing they left running reaches the store.
        drop(dequeuer);
        drop(lost);
        if let Ok(Ok(Some(got))) = dequeued {
            ensure!(
                got == item,
                "cut after answer {cut}: the dequeuer got {got:?}, expected {item:?}"
            );
            // The cut came after the hand-over: past the fault this case injects.
            break;
        }
        let consumer = sweeping
            .backend()
            .queue(name.clone())
            .ctx("making the other consumer")?;
        let looked = started.elapsed();
        let at_once = consumer
            .try_dequeue()
            .bounded("the other consumer's first try_dequeue")
            .await?;
        let delivered = match at_once {
            Some(got) => {
                ensure!(
                    got == item,
                    "cut after answer {cut}: the other consumer got {got:?}, expected {item:?}"
                );
                if looked < STALE_CLAIM {
                    tally.before_claim += 1;
                } else {
                    tally.late_look += 1;
                }
                got
            }
            None => {
                let doing = format!(
                    "cut after answer {cut} (the claim landed, its reply lost): the other \
                     consumer waiting for the item put back once its claim is stale"
                );
                let got = within(back_within, doing, consumer.dequeue()).await?;
                let took = started.elapsed();
                ensure!(
                    got == item,
                    "cut after answer {cut}: the other consumer got {got:?}, expected {item:?}"
                );
                ensure!(
                    took + CLOCK_GRAIN >= STALE_CLAIM,
                    "cut after answer {cut}: the claim was put back {} after the dequeue \
                     started, before it could be stale ({})",
                    ms(took),
                    ms(STALE_CLAIM)
                );
                tally.put_back += 1;
                tally.slowest = tally.slowest.max(took);
                got
            }
        };
        let again = consumer
            .try_dequeue()
            .bounded("checking the queue is empty")
            .await?;
        if let Some(twice) = again {
            return violated(format!(
                "cut after answer {cut}: {delivered:?} delivered, then {twice:?} came out of \
                 a queue of one item"
            ));
        }
    }
    Ok(())
}
