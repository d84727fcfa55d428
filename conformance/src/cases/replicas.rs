//! Work across replicas: group membership (`distsync_core::group`) and shard
//! ownership (`distsync_core::shards`), built on the election, the lock and the
//! store's status listing, so they run on every store that offers those. The bodies
//! are in `replicas/`: [`membership`], [`rebalance`] and [`mixed_shards`], with the
//! per-shard history recording the shard rows share in [`shard_log`].

mod child_member;
mod membership;
mod mixed_shards;
mod rebalance;
mod scheduled_jobs;
mod shard_log;

use super::{boxed, FENCING};
use crate::case::{Case, Claim, Group, Need};
use crate::faults::Hook;
use distsync_core::Isolation;

/// What a group needs beside its primitives: its member list is a status read of a
/// prefix (`Coordinator::status`), a scan of the store's names, which a store that
/// cannot scan its names whole (no `export` either) refuses. There is
/// no capability of its own for it; `export` is the one that says the store scans.
const LISTS: Need = Need::Export;

/// The replicas cases, in matrix order.
pub(super) const CASES: &[Case] = &[
    Case {
        id: "replicas_group_membership",
        group: Group::Replicas,
        guarantee: "a killed member or one whose session ended leaves the member list within its \
                    TTL and two seconds, a live one stays listed, changes() reports the joins \
                    and the leaves",
        needs: &[Need::Election, LISTS],
        claim: Claim::Offered,
        hooks: &[Hook::AnyExternalHolder],
        run: |h| boxed(membership::run(h)),
    },
    Case {
        id: "replicas_shards_rebalance",
        group: Group::Replicas,
        guarantee: "8 members joining then leaving one at a time: each change moves at most \
                    ceil(shards/members)+1 shards, never two owners of a shard",
        needs: &[Need::Lock, Need::Election, LISTS],
        claim: FENCING,
        hooks: &[],
        run: |h| boxed(rebalance::run(h)),
    },
    Case {
        id: "replicas_shards_mixed_faults",
        group: Group::Replicas,
        guarantee: "members cut off by partitions, one in a child process killed and \
                    restarted or paused: one owner of a shard at a time, tokens ordered with \
                    real time per shard, every shard owned again soon after the last fault",
        needs: &[Need::Lock, Need::Election, LISTS],
        claim: FENCING,
        hooks: &[Hook::Partition],
        run: |h| boxed(mixed_shards::run(h)),
    },
    Case {
        id: "replicas_scheduled_job_faults",
        group: Group::Replicas,
        guarantee: "runners of one scheduled job cut off by partitions, one killed and \
                    restarted: no occurrence runs twice, no two runs start closer than \
                    at_least, one runner at a time with tokens ordered with real time, every \
                    occurrence with no fault near it runs",
        needs: &[Need::Lock, Need::Stm(Isolation::SerializableSnapshot)],
        claim: FENCING,
        hooks: &[Hook::Partition, Hook::AnyExternalHolder],
        run: |h| boxed(scheduled_jobs::run(h)),
    },
];
