//! Effects in the caller's own transaction: an outbox whose items exist exactly when
//! their business rows do, consumers whose effects apply exactly once, and writes to
//! the caller's tables fenced by a lock held on any store. The workers are child
//! processes killed (SIGKILL) or paused (SIGSTOP) at random points of their
//! transactions; the tables and the queue are judged after.

mod exactly_once;
mod fenced_write;
mod outbox;

use super::{boxed, FENCING};
use crate::case::{Case, Claim, Group, Need};
use crate::faults::Hook;

/// The transaction cases, in matrix order.
pub(super) const CASES: &[Case] = &[
    Case {
        id: "transactions_outbox_crashes",
        group: Group::Transactions,
        guarantee: "outbox: an item exists exactly when its business row does, producers \
                    killed at random points of their transactions",
        // The store's own claim first: the matrix names the first need's flag.
        needs: &[Need::CallerTransactions, Need::Queue],
        claim: Claim::Offered,
        hooks: &[Hook::CallerTransactions, Hook::ChildHolder],
        run: |h| boxed(outbox::crashes(h)),
    },
    Case {
        id: "transactions_exactly_once",
        group: Group::Transactions,
        guarantee: "exactly-once effects: each item applied once, consumers killed at \
                    random points and paused past their session (the stale \
                    acknowledgement refused, its write rolled back)",
        needs: &[
            Need::CallerTransactions,
            Need::Queue,
            Need::ReliableDelivery,
        ],
        claim: Claim::Offered,
        hooks: &[Hook::CallerTransactions, Hook::ChildHolder],
        run: |h| boxed(exactly_once::crashes_and_pauses(h)),
    },
    Case {
        id: "transactions_fenced_write",
        group: Group::Transactions,
        guarantee: "a lock holder paused past its lease has its write to a PostgreSQL \
                    table refused (its token admitted in the writer's transaction)",
        needs: &[Need::Lock],
        claim: FENCING,
        hooks: &[Hook::CallerTransactions, Hook::PausedHolder],
        run: |h| boxed(fenced_write::paused_holder(h)),
    },
];
