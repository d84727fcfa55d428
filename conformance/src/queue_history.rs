//! Histories of a reliable queue's producers and consumers, and the checker that judges
//! them afterwards, from the records alone (it never asks the store), as
//! [`crate::history`] judges holds.
//!
//! A producer records each enqueue with its outcome: **acknowledged** (the call
//! returned `Ok`: the item is in the queue) or **indeterminate** (an error or a call
//! given up: the item may have been appended, once). A consumer records each
//! [`Receipt`]: when its `receive` call started and returned, which item it got with
//! its redelivery count, and how the delivery ended (an `ack` or `nack` started, or
//! `lost()` seen first) and settled. Partitions are recorded per client in the
//! [`crate::history::Recorder`] that gave the receipts their instants.
//!
//! # What is checked
//! - **Nothing acknowledged lost**: for every acknowledged enqueue, some receipt of the
//!   item ended with an `ack` that returned `Ok`, or its last receipt ended with an
//!   `ack` whose outcome is unknown (an error that may have applied: had it not, the
//!   item would have come back and been received again).
//! - **Nothing invented**: every received item was enqueued (acknowledged or
//!   indeterminate).
//! - **Acknowledged means gone**: no `receive` that started after an `ack` of the item
//!   returned `Ok` gets the item again.
//! - **One holder of an item at a time**: the receipts of one item, cut at partitions
//!   as [`crate::history`] cuts holds (a delivery whose consumer next sees `lost()`
//!   after a partition ends where the partition started), are never live at once;
//!   and a `receive` that started after another receipt of the item was granted gets
//!   a higher redelivery count (each delivery counts, so a redelivery's count is
//!   above every earlier one's). At-least-once allows redelivery after a session is
//!   lost; what it forbids is a second consumer getting the item while the first may
//!   still act on it.
//!
//! Instants are those of one [`crate::history::Recorder`], taken in this process.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use crate::history::{self, Event, Kind, Rules};

/// How an enqueue call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Enqueued {
    /// It returned `Ok`: the item is in the queue.
    Acknowledged,
    /// It failed or was given up: the item may be in the queue, once.
    Indeterminate,
}

/// One enqueue call.
#[derive(Clone, Debug)]
pub(crate) struct Enqueue {
    /// The item (unique in the run).
    pub(crate) item: String,
    /// How the call ended.
    pub(crate) outcome: Enqueued,
}

/// How a delivery was settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Settled {
    /// `ack` returned `Ok` at this instant: the item is gone.
    Acked(Duration),
    /// `ack` refused (the hold was gone: the item is back in the queue).
    AckRefused,
    /// `ack` failed or was given up: it may have applied.
    AckUnknown,
    /// `nack`ed, or dropped (which nacks), whatever its outcome: the item stays.
    Returned,
    /// `lost()` fired first; the delivery was dropped.
    Lost,
}

/// One delivery, as its consumer saw it.
#[derive(Clone, Debug)]
pub(crate) struct Receipt {
    /// The consumer.
    pub(crate) client: usize,
    /// The item.
    pub(crate) item: String,
    /// Its redelivery count.
    pub(crate) redeliveries: u32,
    /// When the `receive` call started.
    pub(crate) invoked: Duration,
    /// When it returned the item.
    pub(crate) granted: Duration,
    /// When the consumer stopped acting on it: its `ack` or `nack` started, or it saw
    /// `lost()`.
    pub(crate) ended: Duration,
    /// How it was settled.
    pub(crate) settled: Settled,
}

impl fmt::Display for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "c{} got {} (redelivery {}) called {:.3}s, granted {:.3}s, ended {:.3}s, {:?}",
            self.client,
            self.item,
            self.redeliveries,
            self.invoked.as_secs_f64(),
            self.granted.as_secs_f64(),
            self.ended.as_secs_f64(),
            self.settled
        )
    }
}

/// A violation the checker found.
#[derive(Clone, Debug)]
pub(crate) enum Violation {
    /// An acknowledged enqueue that no acknowledged (or possibly acknowledged) delivery
    /// took out of the queue.
    Lost {
        /// The item.
        item: String,
        /// Its receipts.
        receipts: Vec<Receipt>,
    },
    /// A received item that no producer enqueued.
    NeverEnqueued(Receipt),
    /// A receipt of an item after an `ack` of it returned `Ok`.
    AfterAck {
        /// When the `ack` returned.
        acked: Duration,
        /// The later receipt.
        later: Receipt,
    },
    /// Two receipts of one item live at once, or out of order (see the module docs).
    Holders {
        /// The item.
        item: String,
        /// What [`crate::history::check`] found in the item's receipts.
        found: history::Violation,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Lost { item, receipts } => {
                write!(
                    f,
                    "acknowledged item {item} lost: {} receipts",
                    receipts.len()
                )?;
                for receipt in receipts {
                    write!(f, " [{receipt}]")?;
                }
                Ok(())
            }
            Self::NeverEnqueued(receipt) => write!(f, "received, never enqueued: [{receipt}]"),
            Self::AfterAck { acked, later } => write!(
                f,
                "received again after its ack returned Ok at {:.3}s: [{later}]",
                acked.as_secs_f64()
            ),
            Self::Holders { item, found } => write!(
                f,
                "item {item}, its deliveries as holds (token = redelivery count): {found}"
            ),
        }
    }
}

/// What [`check`] found.
#[derive(Debug, Default)]
pub(crate) struct Verdict {
    /// Acknowledged enqueues.
    pub(crate) acknowledged: usize,
    /// Indeterminate enqueues.
    pub(crate) indeterminate: usize,
    /// Of those, how many were received (so they had been appended).
    pub(crate) indeterminate_received: usize,
    /// Receipts that were redeliveries.
    pub(crate) redelivered: usize,
    /// What is violated (empty when the history passes).
    pub(crate) violations: Vec<Violation>,
}

/// How many violations a verdict lists at most (the first ones are the evidence).
const MAX_REPORTED: usize = 20;

/// Judges `enqueues` and `receipts` with the partitions in `events` (the module docs
/// say what is checked).
pub(crate) fn check(enqueues: &[Enqueue], receipts: &[Receipt], events: &[Event]) -> Verdict {
    let mut verdict = Verdict::default();
    let mut by_item: BTreeMap<&str, Vec<&Receipt>> = BTreeMap::new();
    for receipt in receipts {
        by_item.entry(&receipt.item).or_default().push(receipt);
    }
    for list in by_item.values_mut() {
        list.sort_by_key(|receipt| receipt.granted);
    }
    let enqueued: HashMap<&str, Enqueued> = enqueues
        .iter()
        .map(|enqueue| (enqueue.item.as_str(), enqueue.outcome))
        .collect();
    let mut found = Vec::new();
    for enqueue in enqueues {
        let mine = by_item.get(enqueue.item.as_str());
        match enqueue.outcome {
            Enqueued::Acknowledged => verdict.acknowledged += 1,
            Enqueued::Indeterminate => {
                verdict.indeterminate += 1;
                verdict.indeterminate_received += usize::from(mine.is_some());
            }
        }
        if enqueue.outcome == Enqueued::Acknowledged && !taken_out(mine.map_or(&[], |m| m)) {
            found.push(Violation::Lost {
                item: enqueue.item.clone(),
                receipts: mine.map_or_else(Vec::new, |m| m.iter().map(|&r| r.clone()).collect()),
            });
        }
    }
    for (item, mine) in &by_item {
        verdict.redelivered += mine.iter().filter(|r| r.redeliveries > 0).count();
        if !enqueued.contains_key(item) {
            found.push(Violation::NeverEnqueued(mine[0].clone()));
        }
        let acked = mine.iter().find_map(|receipt| match receipt.settled {
            Settled::Acked(at) => Some(at),
            _ => None,
        });
        if let Some(acked) = acked {
            if let Some(later) = mine.iter().find(|receipt| receipt.invoked > acked) {
                found.push(Violation::AfterAck {
                    acked,
                    later: (*later).clone(),
                });
            }
        }
        let judged = history::check(&as_holds(mine, events), &ONE_HOLDER);
        found.extend(
            judged
                .violations
                .into_iter()
                .map(|found| Violation::Holders {
                    item: (*item).to_owned(),
                    found,
                }),
        );
    }
    found.truncate(MAX_REPORTED);
    verdict.violations = found;
    verdict
}

/// One holder at a time, no liveness requirement (the drain is checked instead).
const ONE_HOLDER: Rules = Rules {
    capacity: 1,
    liveness: None,
};

/// How many acknowledged enqueues `receipts` have not taken out of the queue yet (see
/// the module docs): what a drain waits for.
pub(crate) fn pending(enqueues: &[Enqueue], receipts: &[Receipt]) -> usize {
    let mut by_item: HashMap<&str, Vec<&Receipt>> = HashMap::new();
    for receipt in receipts {
        by_item.entry(&receipt.item).or_default().push(receipt);
    }
    enqueues
        .iter()
        .filter(|enqueue| enqueue.outcome == Enqueued::Acknowledged)
        .filter(|enqueue| {
            let mut mine = by_item.remove(enqueue.item.as_str()).unwrap_or_default();
            mine.sort_by_key(|receipt| receipt.granted);
            !taken_out(&mine)
        })
        .count()
}

/// Whether `receipts` (of one item, in grant order) took it out of the queue.
fn taken_out(receipts: &[&Receipt]) -> bool {
    receipts
        .iter()
        .any(|receipt| matches!(receipt.settled, Settled::Acked(_)))
        || receipts
            .last()
            .is_some_and(|receipt| receipt.settled == Settled::AckUnknown)
}

/// The receipts of one item as a history of holds (the redelivery count as the
/// token), with the partitions and pauses of their consumers, in time order.
fn as_holds(receipts: &[&Receipt], events: &[Event]) -> Vec<Event> {
    let mut holds: Vec<Event> = Vec::new();
    for receipt in receipts {
        let client = receipt.client;
        let end = if receipt.settled == Settled::Lost {
            Kind::Lost
        } else {
            Kind::Release
        };
        holds.extend(
            [
                (receipt.invoked, Kind::Invoke),
                (
                    receipt.granted,
                    Kind::Grant(u64::from(receipt.redeliveries)),
                ),
                (receipt.ended, end),
            ]
            .map(|(at, kind)| Event { at, client, kind }),
        );
    }
    let faults = events.iter().filter(|event| {
        matches!(
            event.kind,
            Kind::Cut | Kind::Heal | Kind::Pause | Kind::Resume
        ) && receipts
            .iter()
            .any(|receipt| receipt.client == event.client)
    });
    holds.extend(faults);
    // Stable: at one instant, a consumer's own events keep their order.
    holds.sort_by_key(|event| event.at);
    holds
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn enqueue(item: &str, outcome: Enqueued) -> Enqueue {
        Enqueue {
            item: item.to_owned(),
            outcome,
        }
    }

    fn receipt(
        client: usize,
        item: &str,
        redeliveries: u32,
        span: [u64; 3],
        settled: Settled,
    ) -> Receipt {
        Receipt {
            client,
            item: item.to_owned(),
            redeliveries,
            invoked: ms(span[0]),
            granted: ms(span[1]),
            ended: ms(span[2]),
            settled,
        }
    }

    fn cut(client: usize, from: u64, to: u64) -> [Event; 2] {
        [
            Event {
                at: ms(from),
                client,
                kind: Kind::Cut,
            },
            Event {
                at: ms(to),
                client,
                kind: Kind::Heal,
            },
        ]
    }

    #[test]
    fn a_clean_history_passes() {
        let enqueues = [
            enqueue("a", Enqueued::Acknowledged),
            enqueue("b", Enqueued::Indeterminate),
            enqueue("c", Enqueued::Indeterminate),
        ];
        let receipts = [
            receipt(1, "a", 0, [0, 10, 20], Settled::Returned),
            receipt(2, "a", 1, [15, 25, 30], Settled::Acked(ms(32))),
            receipt(1, "b", 0, [40, 45, 50], Settled::AckUnknown),
        ];
        let verdict = check(&enqueues, &receipts, &[]);
        assert!(verdict.violations.is_empty(), "{:?}", verdict.violations);
        assert_eq!(verdict.indeterminate_received, 1);
        assert_eq!(verdict.redelivered, 1);
    }

    #[test]
    fn an_acknowledged_item_never_acked_is_lost() {
        let enqueues = [
            enqueue("a", Enqueued::Acknowledged),
            enqueue("b", Enqueued::Acknowledged),
        ];
        let receipts = [receipt(1, "a", 0, [0, 10, 20], Settled::Returned)];
        let verdict = check(&enqueues, &receipts, &[]);
        let lost: Vec<String> = verdict
            .violations
            .iter()
            .filter_map(|v| match v {
                Violation::Lost { item, .. } => Some(item.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(lost, ["a", "b"]);
    }

    #[test]
    fn an_unknown_ack_then_a_redelivery_does_not_take_the_item_out() {
        let enqueues = [enqueue("a", Enqueued::Acknowledged)];
        let receipts = [
            receipt(1, "a", 0, [0, 10, 20], Settled::AckUnknown),
            receipt(2, "a", 1, [25, 30, 40], Settled::AckRefused),
        ];
        let verdict = check(&enqueues, &receipts, &[]);
        assert!(matches!(verdict.violations[..], [Violation::Lost { .. }]));
    }

    #[test]
    fn an_invented_item_and_a_delivery_after_an_ack_are_violations() {
        let enqueues = [enqueue("a", Enqueued::Acknowledged)];
        let receipts = [
            receipt(1, "a", 0, [0, 10, 20], Settled::Acked(ms(22))),
            receipt(2, "a", 1, [30, 35, 40], Settled::Acked(ms(42))),
            receipt(2, "z", 0, [50, 55, 60], Settled::Acked(ms(62))),
        ];
        let verdict = check(&enqueues, &receipts, &[]);
        assert!(verdict
            .violations
            .iter()
            .any(|v| matches!(v, Violation::AfterAck { later, .. } if later.client == 2)));
        assert!(verdict
            .violations
            .iter()
            .any(|v| matches!(v, Violation::NeverEnqueued(r) if r.item == "z")));
    }

    #[test]
    fn two_live_holders_of_an_item_are_a_violation_unless_a_partition_cut_the_first() {
        let enqueues = [enqueue("a", Enqueued::Acknowledged)];
        let receipts = [
            receipt(1, "a", 0, [0, 10, 100], Settled::Lost),
            receipt(2, "a", 1, [20, 50, 60], Settled::Acked(ms(62))),
        ];
        let overlapping = check(&enqueues, &receipts, &[]);
        assert!(overlapping.violations.iter().any(|v| matches!(
            v,
            Violation::Holders {
                found: history::Violation::Overlap { .. },
                ..
            }
        )));
        // Consumer 1 was cut off at 30 ms and next saw lost(): its hold ends at 30 ms.
        let events = cut(1, 30, 120);
        let cut_first = check(&enqueues, &receipts, &events);
        assert!(
            cut_first.violations.is_empty(),
            "{:?}",
            cut_first.violations
        );
    }

    #[test]
    fn a_later_receipt_must_count_a_higher_redelivery() {
        let enqueues = [enqueue("a", Enqueued::Acknowledged)];
        let receipts = [
            receipt(1, "a", 0, [0, 10, 20], Settled::Returned),
            receipt(2, "a", 0, [30, 35, 40], Settled::Acked(ms(42))),
        ];
        let verdict = check(&enqueues, &receipts, &[]);
        assert!(verdict.violations.iter().any(|v| matches!(
            v,
            Violation::Holders {
                found: history::Violation::TokenOrder { .. },
                ..
            }
        )));
    }
}
