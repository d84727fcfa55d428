//! Mixed-fault cases (a lock, a semaphore's permits, an election's leadership):
//! several clients contend for one name for a bounded time while a
//! seeded schedule cuts them off, kills and pauses them; the recorded history is
//! judged afterwards by [`crate::history`] (the driver is
//! [`super::scenario::mixed`]). The seed is in every figure and every evidence.
//!
//! The `_restart` rows run the same clients and faults on a private server that a
//! seeded schedule also restarts; their clients bound session TTLs
//! (`max_session_ttl=`) where the store's URL takes it: the configuration in which a
//! store that forgets on a restart (Redis without persistence) keeps holds exclusive,
//! which these rows claim ([`RESTART`]).
//!
//! `mixed_faults_queue` and `mixed_faults_stm` put data under the same partitions:
//! producers and consumers of one reliable queue ([`super::scenario::mixed_queue`],
//! judged by [`crate::queue_history`]) and STM transfers on a versioned bank
//! ([`super::scenario::mixed_stm`], judged by [`crate::stm_history`]).

use distsync_core::{Capabilities, Isolation};

use super::scenario::mixed::{self, Target};
use super::scenario::{mixed_queue, mixed_stm};
use super::{boxed, FENCING};
use crate::case::{Case, Claim, Group, Need};
use crate::faults::Hook;

/// The `_restart` rows' claim: fencing, and holds exclusive across a restart, which
/// a backend whose URL takes `max_session_ttl=` (`session_bound`) declares with it
/// (the rows' clients carry it, whatever the column's URL says) and the others
/// declare or not.
const RESTART: Claim = Claim::Flag(
    "fencing and exclusive_across_restart with max_session_ttl=",
    |c: &Capabilities| c.fencing && (c.exclusive_across_restart || c.session_bound),
);

/// The hooks of the `_restart` rows.
const RESTART_HOOKS: &[Hook] = &[
    Hook::AnyExternalHolder,
    Hook::Partition,
    Hook::PrivateServer,
];

/// The mixed-fault cases, in matrix order.
pub(super) const CASES: &[Case] = &[
    Case {
        id: "mixed_faults_lock",
        group: Group::MixedFaults,
        guarantee: "under partitions, kills and pauses: one holder at a time outside pauses, \
                    tokens ordered with real time, a grant soon after the last fault heals",
        needs: &[Need::Lock],
        claim: FENCING,
        hooks: &[Hook::AnyExternalHolder, Hook::Partition],
        run: |h| boxed(mixed::run(h, Target::Lock)),
    },
    Case {
        id: "mixed_faults_semaphore",
        group: Group::MixedFaults,
        guarantee: "under partitions, kills and pauses: at most N permit holders outside pauses, \
                    tokens ordered with real time, a grant soon after the last fault heals",
        needs: &[Need::Semaphore],
        claim: FENCING,
        hooks: &[Hook::AnyExternalHolder, Hook::Partition],
        run: |h| boxed(mixed::run(h, Target::Permit)),
    },
    Case {
        id: "mixed_faults_election",
        group: Group::MixedFaults,
        guarantee: "under partitions, kills and pauses: one leader at a time outside pauses, \
                    terms ordered with real time, a leader soon after the last fault heals",
        needs: &[Need::Election],
        claim: FENCING,
        hooks: &[Hook::AnyExternalHolder, Hook::Partition],
        run: |h| boxed(mixed::run(h, Target::Leadership)),
    },
    Case {
        id: "mixed_faults_lock_restart",
        group: Group::MixedFaults,
        guarantee: "store restarts too (max_session_ttl= where the URL takes it): one holder at a \
                    time outside pauses, a holder's lost() before another's grant across a \
                    restart, tokens ordered with real time, a grant soon after the last fault",
        needs: &[Need::Lock],
        claim: RESTART,
        hooks: RESTART_HOOKS,
        run: |h| boxed(mixed::run_restarting(h, Target::Lock)),
    },
    Case {
        id: "mixed_faults_semaphore_restart",
        group: Group::MixedFaults,
        guarantee: "store restarts too (max_session_ttl= where the URL takes it): at most N \
                    permit holders outside pauses, a holder's lost() before another's grant \
                    across a restart, tokens ordered with real time, a grant soon after the last \
                    fault",
        needs: &[Need::Semaphore],
        claim: RESTART,
        hooks: RESTART_HOOKS,
        run: |h| boxed(mixed::run_restarting(h, Target::Permit)),
    },
    Case {
        id: "mixed_faults_election_restart",
        group: Group::MixedFaults,
        guarantee: "store restarts too (max_session_ttl= where the URL takes it): one leader at a \
                    time outside pauses, a leader's lost() before another's term across a \
                    restart, terms ordered with real time, a leader soon after the last fault",
        needs: &[Need::Election],
        claim: RESTART,
        hooks: RESTART_HOOKS,
        run: |h| boxed(mixed::run_restarting(h, Target::Leadership)),
    },
    Case {
        id: "mixed_faults_queue",
        group: Group::MixedFaults,
        guarantee: "under partitions: no acknowledged item lost, none invented or back after its \
                    ack, one consumer of an item at a time, redelivery counts ordered with real time",
        needs: &[Need::Queue, Need::ReliableDelivery],
        claim: Claim::Flag(
            "queue, acknowledged items kept under partitions",
            |c: &Capabilities| c.reliable_delivery,
        ),
        hooks: &[Hook::Partition],
        run: |h| boxed(mixed_queue::run(h)),
    },
    Case {
        id: "mixed_faults_stm",
        group: Group::MixedFaults,
        guarantee: "under partitions at SerializableSnapshot: committed transactions form one \
                    serial chain of versions to the final state, none lost",
        needs: &[Need::Stm(Isolation::SerializableSnapshot)],
        claim: Claim::Offered,
        hooks: &[Hook::Partition],
        run: |h| boxed(mixed_stm::run(h, Isolation::SerializableSnapshot)),
    },
    Case {
        id: "mixed_faults_stm_serializable",
        group: Group::MixedFaults,
        guarantee: "under partitions at Serializable: committed transactions form one serial \
                    chain of versions to the final state, none lost",
        needs: &[Need::Stm(Isolation::Serializable)],
        claim: Claim::Offered,
        hooks: &[Hook::Partition],
        run: |h| boxed(mixed_stm::run(h, Isolation::Serializable)),
    },
];
