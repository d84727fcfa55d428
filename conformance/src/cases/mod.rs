//! The one list of cases, [`CASES`], made of the lists of the files named by case
//! prefix: the `lock_*` cases are declared in `lock.rs` (their bodies there or in
//! `lock/`), the `server_*` cases in `server.rs`, the `api_*` cases in `api.rs`, and
//! so on, one file per matrix row group ([`Group`]). Each of those files declares its
//! cases in a `CASES` list of its own, in matrix order; [`GROUPS`] puts the files in
//! the matrix's order of groups.
//!
//! The fault drivers that several groups share (a holder killed or paused in a child
//! process, a holder cut off by a partition, each taking what is held as an argument)
//! live in [`scenario`]; a case of any group that uses one names it in its entry.

use std::future::Future;

use distsync_core::Capabilities;
use futures::future::BoxFuture;

use crate::case::{Case, Claim, Group};
use crate::check::Check;
use crate::outcome::Outcome;

mod api;
mod barrier;
mod counter;
mod double_barrier;
mod election;
mod latch;
mod lock;
mod migrate;
mod mixed_faults;
mod queue;
mod rate_limiter;
mod replicas;
mod rwlock;
mod scenario;
mod semaphore;
mod server;
mod session;
mod stm;
mod transactions;

/// A case body's check as the boxed [`Outcome`] future of [`Case::run`].
fn boxed(body: impl Future<Output = Check> + Send + 'static) -> BoxFuture<'static, Outcome> {
    Box::pin(async move { Outcome::from(body.await) })
}

// The guarantee flags the cases claim (see `Claim::Flag`).
const FENCING: Claim = Claim::Flag("fencing", |c: &Capabilities| c.fencing);
const FIFO: Claim = Claim::Flag("fifo_waiters", |c: &Capabilities| c.fifo_waiters);
const LOST: Claim = Claim::Flag("lost_notification", |c: &Capabilities| c.lost_notification);
const STALLED: Claim = Claim::Flag("stalled_holder_expires", |c: &Capabilities| {
    c.stalled_holder_expires
});
const PARTITION: Claim = Claim::Flag("partition_safe", |c: &Capabilities| c.partition_safe);
const SURVIVES: Claim = Claim::Flag("survives_restart", |c: &Capabilities| c.survives_restart);
const SURVIVES_FAILOVER: Claim =
    Claim::Flag("survives_failover", |c: &Capabilities| c.survives_failover);
const LINEARIZABLE: Claim = Claim::Flag("linearizable", |c: &Capabilities| c.linearizable);

/// Each group with the cases its file declares, in matrix order.
const GROUPS: &[(Group, &[Case])] = &[
    (Group::Lock, lock::CASES),
    (Group::UnfairLock, lock::UNFAIR_CASES),
    (Group::Session, session::CASES),
    (Group::Election, election::CASES),
    (Group::RwLock, rwlock::CASES),
    (Group::Queue, queue::CASES),
    (Group::Transactions, transactions::CASES),
    (Group::Barrier, barrier::CASES),
    (Group::DoubleBarrier, double_barrier::CASES),
    (Group::Semaphore, semaphore::CASES),
    (Group::Stm, stm::CASES),
    (Group::Server, server::CASES),
    (Group::Api, api::CASES),
    (Group::Counter, counter::CASES),
    (Group::Latch, latch::CASES),
    (Group::RateLimiter, rate_limiter::CASES),
    (Group::MixedFaults, mixed_faults::CASES),
    (Group::Replicas, replicas::CASES),
    (Group::Migrate, migrate::CASES),
];

/// How many cases [`GROUPS`] lists.
const fn count(groups: &[(Group, &[Case])]) -> usize {
    let mut total = 0;
    let mut i = 0;
    while i < groups.len() {
        total += groups[i].1.len();
        i += 1;
    }
    total
}

/// The cases of [`GROUPS`], one list after the other.
const fn concat<const N: usize>(groups: &[(Group, &[Case])]) -> [Case; N] {
    let mut all = [groups[0].1[0]; N];
    let mut n = 0;
    let mut i = 0;
    while i < groups.len() {
        let cases = groups[i].1;
        let mut j = 0;
        while j < cases.len() {
            all[n] = cases[j];
            n += 1;
            j += 1;
        }
        i += 1;
    }
    assert!(n == N, "the case count is off");
    all
}

static ALL: [Case; count(GROUPS)] = concat(GROUPS);

/// Every case, in matrix order: the only list (made at compile time of the lists of
/// the files named by case prefix). Each case's `id` is also the name of the test
/// [`crate::conformance_tests!`] generates for it.
pub static CASES: &[Case] = &ALL;

/// The case with id `id`.
pub fn find(id: &str) -> Option<&'static Case> {
    CASES.iter().find(|case| case.id == id)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn ids_are_unique_identifiers() {
        let mut seen = HashSet::new();
        for case in CASES {
            assert!(seen.insert(case.id), "duplicate case id {}", case.id);
            assert!(
                case.id
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{} is not a snake_case identifier",
                case.id
            );
            assert!(find(case.id).is_some());
        }
    }

    /// Each file declares the cases of its group only, each id prefixed with the
    /// group's name, and no group appears twice: a case is in the file of its prefix.
    #[test]
    fn each_file_declares_its_own_group() {
        let mut groups = HashSet::new();
        for (group, cases) in GROUPS {
            assert!(groups.insert(*group), "{group} listed twice");
            assert!(!cases.is_empty(), "{group} has no case");
            for case in *cases {
                assert_eq!(case.group, *group, "{} is declared with {group}", case.id);
                assert!(
                    case.id.starts_with(&format!("{group}_")),
                    "{} is not prefixed with {group}_",
                    case.id
                );
            }
        }
        assert_eq!(CASES.len(), count(GROUPS));
    }
}
