//! Server cases: the store's server as a whole (not one primitive) restarted
//! ([`restart`], again and again under the URL's defaults in [`restarts_url`]), its
//! cluster leader lost ([`cluster`], [`cluster_release`]), its
//! leader or primary killed under load ([`failover`]), its disk losing power
//! ([`power_loss`]), a server that evicts keys
//! ([`eviction`]), and a session id taken over by another owner ([`takeover`]).

mod cluster;
mod cluster_release;
mod eviction;
mod failover;
mod power_loss;
mod restart;
mod restart_lead;
mod restarts_url;
mod takeover;
mod wipe;
mod wipe_bounded;

use distsync_core::Capabilities;
use distsync_core::Isolation::SerializableSnapshot;

use super::{boxed, FENCING, LOST, SURVIVES, SURVIVES_FAILOVER};
use crate::case::{Case, Claim, Group, Need};
use crate::faults::Hook;

/// Holds stay exclusive across a restart (no second holder before the first one's
/// `lost()`, tokens growing): a guarantee of its own, apart from durable data
/// (`survives_restart`), which a store that forgets gives with a lock-delay.
const EXCLUSIVE: Claim = Claim::Flag("exclusive_across_restart", |c: &Capabilities| {
    c.exclusive_across_restart
});

/// A release acknowledged just before a crash is not taken back for longer than the
/// holder's next renewal: a store that keeps its state keeps the release
/// (`survives_restart`); one that forgets frees the name with everything else, unless
/// it waits out a lock-delay after forgetting (`exclusive_across_restart` without
/// `survives_restart`), which by design keeps every forgotten name closed for longer
/// than any session, the released one included.
const RELEASE_KEPT: Claim = Claim::Flag("survives_restart or no lock-delay", |c: &Capabilities| {
    c.survives_restart || !c.exclusive_across_restart
});

/// The server cases, in matrix order.
pub(super) const CASES: &[Case] = &[
    Case {
        id: "server_restart_live_clients",
        group: Group::Server,
        guarantee:
            "restart: holders and waiters get lost() or an error, never a wrong answer; works after",
        needs: &[Need::Lock, Need::Queue],
        // "Never a second holder before the first one's lost()" is what a store that
        // forgets gives only with a lock-delay.
        claim: EXCLUSIVE,
        hooks: &[Hook::PrivateServer],
        run: |h| boxed(restart::live_clients(h)),
    },
    Case {
        id: "server_restart_durable_state",
        group: Group::Server,
        guarantee: "restart: queue, STM keys, barriers and fencing counters survive",
        needs: &[
            Need::Lock,
            Need::Queue,
            Need::Barrier,
            Need::Stm(SerializableSnapshot),
        ],
        claim: SURVIVES,
        hooks: &[Hook::PrivateServer],
        run: |h| boxed(restart::durable_state(h)),
    },
    Case {
        id: "server_restart_lead",
        group: Group::Server,
        guarantee: "restart under Coordinator::lead: never two leaders' work at once; both keep \
                    campaigning and one leads after",
        needs: &[Need::Election],
        claim: EXCLUSIVE,
        hooks: &[Hook::PrivateServer],
        run: |h| boxed(restart_lead::keeps_one_leader(h)),
    },
    Case {
        id: "server_wipe_one_holder",
        group: Group::Server,
        guarantee: "a store that forgot (data wiped, started again at the same address): the \
                    holder's lost() before a new client is granted, tokens grow",
        needs: &[Need::Lock],
        claim: EXCLUSIVE,
        hooks: &[Hook::PrivateServer],
        run: |h| boxed(wipe::one_holder(h, wipe::Bound::Column)),
    },
    wipe_bounded::CASE,
    Case {
        id: "server_restarts_url_as_written",
        group: Group::Server,
        guarantee: "restarted again and again under lock holders, the URL as README writes it (no \
                    option): no client granted while another's hold is valid",
        needs: &[Need::Lock],
        claim: EXCLUSIVE,
        hooks: &[Hook::PrivateServer],
        run: |h| boxed(restarts_url::restarts(h, restarts_url::Form::AsWritten)),
    },
    Case {
        id: "server_restarts_url_off",
        group: Group::Server,
        guarantee: "restarted again and again under lock holders, max_session_ttl=off: no client \
                    granted while another's hold is valid",
        needs: &[Need::Lock],
        // Without the lock-delay, holds stay exclusive across a restart only where the
        // store keeps every write.
        claim: Claim::Flag(
            "exclusive_across_restart with max_session_ttl=off",
            |c: &Capabilities| c.survives_restart && c.exclusive_across_restart,
        ),
        hooks: &[Hook::PrivateServer],
        run: |h| boxed(restarts_url::restarts(h, restarts_url::Form::Off)),
    },
    Case {
        id: "server_power_loss_default_durability",
        group: Group::Server,
        guarantee: "power lost under acknowledged writes, the store at its default durability: \
                    a counter's acknowledged adds and the tokens survive",
        needs: &[Need::Lock, Need::Counter],
        claim: SURVIVES,
        hooks: &[Hook::PowerLoss],
        run: |h| boxed(power_loss::acknowledged_writes(h, false)),
    },
    Case {
        id: "server_power_loss_synchronous",
        group: Group::Server,
        guarantee: "power lost under acknowledged writes, every write synced before its \
                    acknowledgement: a counter's acknowledged adds and the tokens survive",
        needs: &[Need::Lock, Need::Counter],
        // At that setting, keeping what it acknowledged is any store's contract.
        claim: Claim::Offered,
        hooks: &[Hook::PowerLoss],
        run: |h| boxed(power_loss::acknowledged_writes(h, true)),
    },
    Case {
        id: "server_crash_after_release",
        group: Group::Server,
        guarantee: "crash: a lock released just before the server crashed is free again before \
                    its holder's session ends",
        needs: &[Need::Lock],
        claim: RELEASE_KEPT,
        hooks: &[Hook::PrivateServer],
        run: |h| boxed(restart::crash_after_release(h)),
    },
    Case {
        id: "server_restart_fencing_tokens",
        group: Group::Server,
        guarantee: "restart: lock, write-lock and election tokens keep increasing",
        needs: &[Need::Lock],
        claim: FENCING,
        hooks: &[Hook::PrivateServer],
        run: |h| boxed(restart::fencing_tokens(h)),
    },
    Case {
        id: "server_cluster_leader_loss",
        group: Group::Server,
        guarantee:
            "cluster leader killed under 8 contenders: one holder at a time, progress resumes",
        needs: &[Need::Lock],
        claim: Claim::Offered,
        hooks: &[Hook::Cluster],
        run: |h| boxed(cluster::leader_loss(h)),
    },
    Case {
        id: "server_cluster_leader_kill",
        group: Group::Server,
        guarantee: "cluster leader SIGKILLed under lock, election and queue load: one holder, \
                    tokens grow, no acknowledged item lost, no stuck or silent hold",
        // The election and the queue are load where the backend offers them (the
        // case runs without them elsewhere and says so in its detail).
        needs: &[Need::Lock],
        claim: SURVIVES_FAILOVER,
        hooks: &[Hook::Cluster],
        run: |h| boxed(failover::failover(h, failover::Fault::Leader)),
    },
    Case {
        id: "server_primary_kill_acknowledged",
        group: Group::Server,
        guarantee: "primary SIGKILLed after its replica lagged, replica acknowledgement on: \
                    one holder, tokens grow, no acknowledged item lost, no stuck or silent hold",
        needs: &[Need::Lock, Need::Election, Need::Queue],
        claim: SURVIVES_FAILOVER,
        hooks: &[Hook::Failover],
        run: |h| {
            boxed(failover::failover(
                h,
                failover::Fault::Primary {
                    acknowledged: true,
                    lock_delay: false,
                },
            ))
        },
    },
    Case {
        id: "server_primary_kill_unacknowledged",
        group: Group::Server,
        guarantee: "primary SIGKILLed after its replica lagged, no replica acknowledgement: \
                    one holder, tokens grow, no acknowledged item lost, no stuck or silent hold",
        needs: &[Need::Lock, Need::Election, Need::Queue],
        // No configuration without replica acknowledgement claims it (the case
        // connects with `wait_replicas=0`, whose capabilities declare it false): what
        // breaks is measured and shown as `violated (not declared)`.
        claim: Claim::Flag("survives_failover (wait_replicas=0)", |_: &Capabilities| false),
        hooks: &[Hook::Failover],
        run: |h| {
            boxed(failover::failover(
                h,
                failover::Fault::Primary {
                    acknowledged: false,
                    lock_delay: false,
                },
            ))
        },
    },
    Case {
        id: "server_primary_kill_unacknowledged_lock_delay",
        group: Group::Server,
        guarantee: "primary SIGKILLed after its replica lagged, no replica acknowledgement, \
                    lock-delay on (max_session_ttl): one holder, tokens grow, no stuck or \
                    silent hold (acknowledged items lost are counted, not judged)",
        needs: &[Need::Lock, Need::Election, Need::Queue],
        // Tokens keep growing across the promotion, and nobody is granted before an
        // old holder's lost(), under the lock-delay: the column's `fencing`, which a
        // connection without acknowledgement declares only with the lock-delay (the
        // case finds the row unsupported otherwise).
        claim: FENCING,
        hooks: &[Hook::Failover],
        run: |h| {
            boxed(failover::failover(
                h,
                failover::Fault::Primary {
                    acknowledged: false,
                    lock_delay: true,
                },
            ))
        },
    },
    Case {
        id: "server_primary_failover_promoted",
        group: Group::Server,
        guarantee: "primary killed, replica promoted, clients redirected: one holder, tokens grow, \
                    no acknowledged item lost, no stuck or silent hold",
        needs: &[Need::Lock, Need::Election, Need::Queue],
        // Run on the store's own primary/replica pair (a PostgreSQL streaming standby, a
        // MariaDB GTID replica), which the runner starts with a synchronous standby or
        // a semi-synchronous replica; the backends declare it only when connected to
        // such a primary, and their own tests run the asynchronous pairs too.
        claim: SURVIVES_FAILOVER,
        // The pair is private servers: only the pair harness offers both.
        hooks: &[Hook::Failover, Hook::PrivateServer],
        run: |h| boxed(failover::failover(h, failover::Fault::Promoted)),
    },
    Case {
        id: "server_cluster_release_during_leader_change",
        group: Group::Server,
        guarantee: "an unlock during a leader change completes: a waiter is granted long before the TTL",
        needs: &[Need::Lock],
        claim: Claim::Offered,
        hooks: &[Hook::Cluster],
        run: |h| boxed(cluster_release::release_during_leader_change(h)),
    },
    Case {
        id: "server_eviction_refused",
        group: Group::Server,
        guarantee: "a store that evicts keys is refused unless the URL opts in, which declares what is lost",
        needs: &[Need::Lock],
        claim: Claim::Offered,
        hooks: &[Hook::EvictingServer],
        run: |h| boxed(eviction::evicting_server_refused(h)),
    },
    Case {
        id: "server_session_id_taken_over",
        group: Group::Server,
        guarantee: "a session whose id another owner took over (restart, repeated id) sees lost() and grants nothing",
        needs: &[Need::Lock],
        claim: LOST,
        hooks: &[Hook::SessionTakeover],
        run: |h| boxed(takeover::session_id_taken_over(h)),
    },
];
