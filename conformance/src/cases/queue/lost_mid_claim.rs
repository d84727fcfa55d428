//! A dequeuer lost between its claim and the hand-over (the fault of
//! [`super::lost_dequeuer`]) leaves its claim behind, and any consumer of the queue must
//! put the item back once the claim is older than the stale bound (`stale_claim=`), and
//! deliver it once. Each round whose dequeuer did not get its item is judged by another
//! consumer, whose URL gives a short `stale_claim=`: a cut before the claim leaves the
//! item in the queue, for that consumer's first look; a cut at the claim's reply leaves
//! it claimed, and the consumer must get it once the claim is stale, not before, and
//! only once.

use std::time::Duration;

use distsync_core::raw::QUEUE_WAITER_TTL;

use super::lost_dequeuer::{scan_cut_points, Judge, LostRound};
use crate::check::{ensure, ms, proxied_client, violated, within, Bounded, Check, Context, Holds};
use crate::faults::Partitioned;
use crate::harness::Harness;

/// The stale bound of the consumer that puts the claim back: short, so the case is
/// quick, and well above [`GIVE_UP`](super::lost_dequeuer::GIVE_UP), so that the other
/// consumer's first look comes before the claim can be stale.
const STALE_CLAIM: Duration = Duration::from_secs(3);

/// How early a put-back may seem by this process's clock: the claim's time is read
/// in whole milliseconds, on the store's clock on some stores.
const CLOCK_GRAIN: Duration = Duration::from_millis(100);

/// How the rounds whose dequeuer did not get its item ended.
#[derive(Default)]
struct Tally {
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
    // Claimed and stale, the item comes to a waiting consumer once its claim is older
    // than STALE_CLAIM, by the consumer's next look: the stale claim's own due time,
    // or at the latest its renewal in the line of waiters.
    let mut sweep = Sweep {
        sweeping: &*sweeping,
        back_within: STALE_CLAIM + QUEUE_WAITER_TTL + h.settle(),
        tally: Tally::default(),
    };
    let rounds = scan_cut_points(&h, "lost-mid-claim", 0, &mut sweep).await?;
    let tally = sweep.tally;
    Ok(Holds::figure(
        format!(
            "{rounds} cut points: {} before the claim (the item stayed), {} at the claim (put \
             back once stale, at most {} after the dequeue started; stale_claim {}), {} looked \
             at late",
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

/// The judge of each round: another consumer, with a short stale bound, gets the item
/// once, at once if the cut came before the claim, once the claim is stale otherwise.
struct Sweep<'a> {
    /// The consumer that puts claims back.
    sweeping: &'a dyn Partitioned,
    /// How soon after the dequeue started a claimed item must be delivered again.
    back_within: Duration,
    tally: Tally,
}

impl Judge for Sweep<'_> {
    async fn judge(&mut self, round: LostRound) -> Check<bool> {
        let LostRound {
            cut,
            queue,
            item,
            started,
            ..
        } = round;
        let tally = &mut self.tally;
        let consumer = self
            .sweeping
            .backend()
            .queue(queue)
            .ctx("making the other consumer")?;
        let looked = started.elapsed();
        let at_once = consumer
            .try_dequeue()
            .bounded("the other consumer's first try_dequeue")
            .await?;
        let claim_left = at_once.is_none();
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
                let got = within(self.back_within, doing, consumer.dequeue()).await?;
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
        Ok(claim_left)
    }
}
