//! Mixed-fault cases (a lock, a semaphore's permits, an election's leadership):
//! several clients contend for one name for a bounded time while a
//! seeded schedule cuts them off, kills and pauses them; the recorded history is
//! judged afterwards by [`crate::history`] (the driver is
//! [`super::scenario::mixed`]). The seed is in every figure and every evidence.

use super::scenario::mixed::{self, Target};
use super::{boxed, FENCING};
use crate::case::{Case, Group, Need};
use crate::faults::Hook;

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
];
