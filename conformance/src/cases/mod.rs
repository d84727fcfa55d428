//! The one list of cases.

use std::future::Future;

use distsync_core::{Capabilities, Isolation};
use futures::future::BoxFuture;

use crate::case::{Case, Claim, Group, Need};
use crate::check::Check;
use crate::faults::{Hook, PartitionMode};
use crate::outcome::Outcome;
use contender::Target;

mod api;
mod barrier;
mod cluster;
mod cluster_release;
mod contender;
mod crash;
mod election;
mod eviction;
mod failover;
mod jepsen;
mod kill;
mod linearizable;
pub(crate) mod lock;
mod multi_lock;
mod names;
mod partition;
mod pause;
mod queue;
mod restart;
mod rwlock;
mod semaphore;
mod session;
mod stm;
mod takeover;
mod timed;

fn boxed(body: impl Future<Output = Check> + Send + 'static) -> BoxFuture<'static, Outcome> {
    Box::pin(async move { Outcome::from(body.await) })
}

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

use Isolation::{ReadCommitted, RepeatableReads, Serializable, SerializableSnapshot};

/// Every case, in matrix order: the only list. Each case's `id` is also the name of
/// the test [`crate::conformance_tests!`] generates for it.
pub static CASES: &[Case] = &[
    Case {
        id: "lock_mutual_exclusion",
        group: Group::Lock,
        guarantee: "mutual exclusion under contention",
        needs: &[Need::Lock],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(lock::mutual_exclusion(h)),
    },
    Case {
        id: "lock_fencing_tokens",
        group: Group::Lock,
        guarantee: "fencing tokens strictly increase",
        needs: &[Need::Lock],
        claim: FENCING,
        hooks: &[],
        run: |h| boxed(lock::fencing_tokens(h)),
    },
    Case {
        id: "lock_try_lock",
        group: Group::Lock,
        guarantee: "try_lock: None while held, a guard when free",
        needs: &[Need::Lock],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(lock::try_lock(h)),
    },
    Case {
        id: "lock_fifo_waiters",
        group: Group::Lock,
        guarantee: "waiters granted in arrival order",
        needs: &[Need::Lock],
        claim: FIFO,
        hooks: &[],
        run: |h| boxed(lock::fifo_waiters(h)),
    },
    Case {
        id: "lock_cancelled_waiter",
        group: Group::Lock,
        guarantee: "a cancelled waiter blocks no one",
        needs: &[Need::Lock],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(lock::cancelled_waiter(h)),
    },
    Case {
        id: "lock_session_end_fires_lost",
        group: Group::Lock,
        guarantee: "lost() fires when the store ends the session",
        needs: &[Need::Lock],
        claim: LOST,
        hooks: &[],
        run: |h| boxed(lock::session_end_fires_lost(h)),
    },
    Case {
        id: "lock_session_end_frees_lock",
        group: Group::Lock,
        guarantee: "the lock frees when the store ends the session",
        needs: &[Need::Lock],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(lock::session_end_frees_lock(h)),
    },
    Case {
        id: "lock_holder_crash",
        group: Group::Lock,
        guarantee: "a holder killed (SIGKILL) in a child process frees the lock",
        needs: &[Need::Lock],
        claim: Claim::Offered,
        hooks: &[Hook::ChildHolder],
        run: |h| boxed(crash::holder(h, Target::Lock)),
    },
    Case {
        id: "lock_holder_pause",
        group: Group::Lock,
        guarantee:
            "a holder paused past its TTL loses the lock, sees lost(), its write is fenced off",
        needs: &[Need::Lock],
        claim: STALLED,
        hooks: &[Hook::PausedHolder],
        run: |h| boxed(pause::holder(h, Target::Lock)),
    },
    Case {
        id: "lock_jepsen_counter",
        group: Group::Lock,
        guarantee:
            "counter under the lock with paused holders: lost updates without / with fencing",
        needs: &[Need::Lock],
        claim: FENCING,
        hooks: &[Hook::PausedHolder],
        run: |h| boxed(jepsen::counter(h)),
    },
    Case {
        id: "lock_partition_silent",
        group: Group::Lock,
        guarantee: "a lock holder cut off (silent partition) sees lost() before anyone else is granted",
        needs: &[Need::Lock],
        claim: PARTITION,
        hooks: &[Hook::Partition],
        run: |h| boxed(partition::cut_off_holder(h, partition::Held::Lock, PartitionMode::Silent)),
    },
    Case {
        id: "lock_partition_reset",
        group: Group::Lock,
        guarantee: "a lock holder cut off (connections reset) sees lost() before anyone else is granted",
        needs: &[Need::Lock],
        claim: PARTITION,
        hooks: &[Hook::Partition],
        run: |h| boxed(partition::cut_off_holder(h, partition::Held::Lock, PartitionMode::Reset)),
    },
    Case {
        id: "lock_multi_lock_opposite_orders",
        group: Group::Lock,
        guarantee: "multi-lock: {a, b} and {b, a} in a loop never deadlock or overlap",
        needs: &[Need::Lock],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(multi_lock::opposite_orders(h)),
    },
    Case {
        id: "lock_guarded_write",
        group: Group::Lock,
        guarantee: "put_if_held commits only while held: a stale holder's write is refused",
        // The specific need first: the matrix notes name the first need's flag.
        needs: &[Need::GuardedWrites, Need::Lock],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(lock::guarded_write(h)),
    },
    Case {
        id: "session_close_releases_all",
        group: Group::Session,
        guarantee: "close() releases lock, leadership and write lock",
        needs: &[Need::Lock],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(session::close_releases_all(h)),
    },
    Case {
        id: "session_store_kill",
        group: Group::Session,
        guarantee: "a session killed by the store out of band: lost() fires, the lock frees",
        needs: &[Need::Lock],
        claim: LOST,
        hooks: &[Hook::KillSession],
        run: |h| boxed(kill::session_killed(h)),
    },
    Case {
        id: "election_one_leader",
        group: Group::Election,
        guarantee: "one leader at a time",
        needs: &[Need::Election],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(election::one_leader(h)),
    },
    Case {
        id: "election_leader_crash",
        group: Group::Election,
        guarantee: "a leader killed (SIGKILL) in a child process is succeeded",
        needs: &[Need::Election],
        claim: Claim::Offered,
        hooks: &[Hook::ChildHolder],
        run: |h| boxed(crash::leader(h)),
    },
    Case {
        id: "election_terms_increase",
        group: Group::Election,
        guarantee: "terms (fencing tokens) strictly increase",
        needs: &[Need::Election],
        claim: FENCING,
        hooks: &[],
        run: |h| boxed(election::terms_increase(h)),
    },
    Case {
        id: "election_campaign_blocks",
        group: Group::Election,
        guarantee: "campaign blocks until elected",
        needs: &[Need::Election],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(election::campaign_blocks(h)),
    },
    Case {
        id: "election_resign_hands_over",
        group: Group::Election,
        guarantee: "resign hands over to the next candidate",
        needs: &[Need::Election],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(election::resign_hands_over(h)),
    },
    Case {
        id: "election_proclaim_not_leader",
        group: Group::Election,
        guarantee: "proclaim after losing leadership is NotLeader",
        needs: &[Need::Election],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(election::proclaim_not_leader(h)),
    },
    Case {
        id: "election_leader_value_term",
        group: Group::Election,
        guarantee: "leader() returns value and term",
        needs: &[Need::Election],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(election::leader_value_and_term(h)),
    },
    Case {
        id: "election_observe_in_order",
        group: Group::Election,
        guarantee: "observe() sees every change in order",
        needs: &[Need::Election],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(election::observe_in_order(h)),
    },
    Case {
        id: "election_partition_silent",
        group: Group::Election,
        guarantee: "a leader cut off (silent partition) sees lost() before anyone else is granted",
        needs: &[Need::Election],
        claim: PARTITION,
        hooks: &[Hook::Partition],
        run: |h| boxed(partition::cut_off_holder(h, partition::Held::Leadership, PartitionMode::Silent)),
    },
    Case {
        id: "election_partition_reset",
        group: Group::Election,
        guarantee: "a leader cut off (connections reset) sees lost() before anyone else is granted",
        needs: &[Need::Election],
        claim: PARTITION,
        hooks: &[Hook::Partition],
        run: |h| boxed(partition::cut_off_holder(h, partition::Held::Leadership, PartitionMode::Reset)),
    },
    Case {
        id: "rwlock_readers_share",
        group: Group::RwLock,
        guarantee: "readers share",
        needs: &[Need::RwLock],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(rwlock::readers_share(h)),
    },
    Case {
        id: "rwlock_writer_excludes",
        group: Group::RwLock,
        guarantee: "a writer excludes readers and writers",
        needs: &[Need::RwLock],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(rwlock::writer_excludes(h)),
    },
    Case {
        id: "rwlock_waiting_writer_blocks_readers",
        group: Group::RwLock,
        guarantee: "a waiting writer blocks later readers",
        needs: &[Need::RwLock],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(rwlock::waiting_writer_blocks_readers(h)),
    },
    Case {
        id: "rwlock_write_tokens",
        group: Group::RwLock,
        guarantee: "write tokens strictly increase",
        needs: &[Need::RwLock],
        claim: FENCING,
        hooks: &[],
        run: |h| boxed(rwlock::write_tokens(h)),
    },
    Case {
        id: "rwlock_partition_silent",
        group: Group::RwLock,
        guarantee: "a write-lock holder cut off (silent partition) sees lost() before anyone else is granted",
        needs: &[Need::RwLock],
        claim: PARTITION,
        hooks: &[Hook::Partition],
        run: |h| boxed(partition::cut_off_holder(h, partition::Held::WriteLock, PartitionMode::Silent)),
    },
    Case {
        id: "rwlock_partition_reset",
        group: Group::RwLock,
        guarantee: "a write-lock holder cut off (connections reset) sees lost() before anyone else is granted",
        needs: &[Need::RwLock],
        claim: PARTITION,
        hooks: &[Hook::Partition],
        run: |h| boxed(partition::cut_off_holder(h, partition::Held::WriteLock, PartitionMode::Reset)),
    },
    Case {
        id: "queue_fifo",
        group: Group::Queue,
        guarantee: "FIFO order",
        needs: &[Need::Queue],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(queue::fifo(h)),
    },
    Case {
        id: "queue_priority",
        group: Group::Queue,
        guarantee: "priority order (lower first, FIFO within)",
        needs: &[Need::Queue, Need::PriorityQueue],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(queue::priority(h)),
    },
    Case {
        id: "queue_no_loss_no_duplicate",
        group: Group::Queue,
        guarantee: "no loss, no duplicate with cancelled consumers",
        needs: &[Need::Queue],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(queue::no_loss_no_duplicate(h)),
    },
    Case {
        id: "queue_lost_replies",
        group: Group::Queue,
        guarantee: "lost replies to claims (connections reset mid-dequeue): every item once",
        needs: &[Need::Queue],
        claim: Claim::Offered,
        hooks: &[Hook::Partition],
        run: |h| boxed(queue::lost_replies(h)),
    },
    Case {
        id: "queue_empty",
        group: Group::Queue,
        guarantee: "try_dequeue on empty is None; dequeue wakes",
        needs: &[Need::Queue],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(queue::empty_queue(h)),
    },
    Case {
        id: "queue_reliable_session_end",
        group: Group::Queue,
        guarantee: "reliable delivery: a receiver's session ended by the store returns its item first, redelivery count 1",
        needs: &[Need::Queue, Need::ReliableDelivery],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(queue::reliable_session_end(h)),
    },
    Case {
        id: "queue_reliable_nack_keeps_place",
        group: Group::Queue,
        guarantee: "reliable delivery: nack (or a dropped delivery) returns the item at its place; dequeue skips held items",
        needs: &[Need::Queue, Need::PriorityQueue, Need::ReliableDelivery],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(queue::reliable_nack_keeps_place(h)),
    },
    Case {
        id: "queue_reliable_concurrent",
        group: Group::Queue,
        guarantee: "reliable delivery: concurrent consumers never hold one item at once; each acked once, in order",
        needs: &[Need::Queue, Need::ReliableDelivery],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(queue::reliable_concurrent(h)),
    },
    Case {
        id: "queue_reliable_consumer_crash",
        group: Group::Queue,
        guarantee: "reliable delivery: a consumer killed (SIGKILL, child process) after receiving loses nothing: redelivered with count 1 after its session's TTL",
        needs: &[Need::Queue, Need::ReliableDelivery],
        claim: Claim::Offered,
        // Kills a child-process consumer (Hook::ChildHolder) where there is one, and
        // freezes the consumer's lease on the memory store (Hook::PausedHolder): the
        // body picks whichever the store's hooks offer.
        hooks: &[],
        run: |h| boxed(queue::reliable_consumer_crash(h)),
    },
    Case {
        id: "barrier_wait_not_held",
        group: Group::Barrier,
        guarantee: "wait returns at once when not held",
        needs: &[Need::Barrier],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(barrier::wait_when_not_held(h)),
    },
    Case {
        id: "barrier_blocks_until_release",
        group: Group::Barrier,
        guarantee: "waiters block while held, all pass on release",
        needs: &[Need::Barrier],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(barrier::blocks_until_release(h)),
    },
    Case {
        id: "double_barrier_enter_leave",
        group: Group::DoubleBarrier,
        guarantee: "enter and leave wait for every participant",
        needs: &[Need::DoubleBarrier],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(barrier::double_enter_leave(h)),
    },
    Case {
        id: "double_barrier_too_many",
        group: Group::DoubleBarrier,
        guarantee: "participant count+1 gets TooManyParticipants",
        needs: &[Need::DoubleBarrier],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(barrier::too_many_participants(h)),
    },
    Case {
        id: "double_barrier_partition_silent",
        group: Group::DoubleBarrier,
        guarantee: "a participant cut off (silent partition) sees lost() before the other participant passes",
        needs: &[Need::DoubleBarrier],
        claim: PARTITION,
        hooks: &[Hook::Partition],
        run: |h| boxed(partition::cut_off_holder(h, partition::Held::DoubleBarrierEntry, PartitionMode::Silent)),
    },
    Case {
        id: "double_barrier_partition_reset",
        group: Group::DoubleBarrier,
        guarantee: "a participant cut off (connections reset) sees lost() before the other participant passes",
        needs: &[Need::DoubleBarrier],
        claim: PARTITION,
        hooks: &[Hook::Partition],
        run: |h| boxed(partition::cut_off_holder(h, partition::Held::DoubleBarrierEntry, PartitionMode::Reset)),
    },
    Case {
        id: "semaphore_bounded_holders",
        group: Group::Semaphore,
        guarantee: "never more than N holders; another count is a typed error",
        needs: &[Need::Semaphore],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(semaphore::bounded_holders(h)),
    },
    Case {
        id: "semaphore_fifo_waiters",
        group: Group::Semaphore,
        guarantee: "FIFO waiters, cancelled waiters block no one, a session end frees its permit",
        needs: &[Need::Semaphore],
        claim: FIFO,
        hooks: &[],
        run: |h| boxed(semaphore::fifo_waiters(h)),
    },
    Case {
        id: "semaphore_holder_crash",
        group: Group::Semaphore,
        guarantee: "a permit holder killed (SIGKILL) in a child process frees its permit",
        needs: &[Need::Semaphore],
        claim: Claim::Offered,
        hooks: &[Hook::ChildHolder],
        run: |h| boxed(crash::holder(h, Target::Permit)),
    },
    Case {
        id: "semaphore_holder_pause",
        group: Group::Semaphore,
        guarantee:
            "a permit holder paused past its TTL loses its permit, sees lost(), its write is fenced off",
        needs: &[Need::Semaphore],
        claim: STALLED,
        hooks: &[Hook::PausedHolder],
        run: |h| boxed(pause::holder(h, Target::Permit)),
    },
    Case {
        id: "stm_bank_serializable_snapshot",
        group: Group::Stm,
        guarantee: "bank total kept at SerializableSnapshot",
        needs: &[Need::Stm(SerializableSnapshot)],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(stm::bank(h, SerializableSnapshot)),
    },
    Case {
        id: "stm_bank_serializable",
        group: Group::Stm,
        guarantee: "bank total kept at Serializable",
        needs: &[Need::Stm(Serializable)],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(stm::bank(h, Serializable)),
    },
    Case {
        id: "stm_bank_repeatable_reads",
        group: Group::Stm,
        guarantee: "bank total kept at RepeatableReads",
        needs: &[Need::Stm(RepeatableReads)],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(stm::bank(h, RepeatableReads)),
    },
    Case {
        id: "stm_conflict_serializable_snapshot",
        group: Group::Stm,
        guarantee: "conflicts retried at SerializableSnapshot",
        needs: &[Need::Stm(SerializableSnapshot)],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(stm::conflict_retried(h, SerializableSnapshot)),
    },
    Case {
        id: "stm_conflict_serializable",
        group: Group::Stm,
        guarantee: "conflicts retried at Serializable",
        needs: &[Need::Stm(Serializable)],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(stm::conflict_retried(h, Serializable)),
    },
    Case {
        id: "stm_conflict_repeatable_reads",
        group: Group::Stm,
        guarantee: "conflicts retried at RepeatableReads",
        needs: &[Need::Stm(RepeatableReads)],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(stm::conflict_retried(h, RepeatableReads)),
    },
    Case {
        id: "stm_read_committed_lost_update",
        group: Group::Stm,
        guarantee: "ReadCommitted: lost update possible, as documented",
        needs: &[Need::Stm(ReadCommitted)],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(stm::read_committed_lost_update(h)),
    },
    Case {
        id: "stm_no_anomalies_serializable_snapshot",
        group: Group::Stm,
        guarantee: "no write skew, no phantom on absent keys at SerializableSnapshot",
        needs: &[Need::Stm(SerializableSnapshot)],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(stm::no_skew_no_phantom(h, SerializableSnapshot)),
    },
    Case {
        id: "stm_no_anomalies_serializable",
        group: Group::Stm,
        guarantee: "no write skew, no phantom on absent keys at Serializable",
        needs: &[Need::Stm(Serializable)],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(stm::no_skew_no_phantom(h, Serializable)),
    },
    Case {
        id: "stm_no_anomalies_repeatable_reads",
        group: Group::Stm,
        guarantee: "no write skew, no phantom on absent keys at RepeatableReads",
        needs: &[Need::Stm(RepeatableReads)],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(stm::no_skew_no_phantom(h, RepeatableReads)),
    },
    Case {
        id: "stm_read_committed_anomalies",
        group: Group::Stm,
        guarantee: "ReadCommitted: write skew and phantom possible, as documented",
        needs: &[Need::Stm(ReadCommitted)],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(stm::read_committed_anomalies(h)),
    },
    Case {
        id: "stm_no_stale_read",
        group: Group::Stm,
        guarantee: "no stale read across two clients (linearizability probe)",
        needs: &[Need::Stm(SerializableSnapshot)],
        claim: LINEARIZABLE,
        hooks: &[Hook::SecondClient],
        run: |h| boxed(linearizable::no_stale_read(h)),
    },
    Case {
        id: "server_restart_live_clients",
        group: Group::Server,
        guarantee:
            "restart: holders and waiters get lost() or an error, never a wrong answer; works after",
        needs: &[Need::Lock, Need::Queue],
        claim: Claim::Offered,
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
        needs: &[Need::Lock, Need::Election, Need::Queue],
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
        run: |h| boxed(failover::failover(h, failover::Fault::Primary { acknowledged: true })),
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
        run: |h| boxed(failover::failover(h, failover::Fault::Primary { acknowledged: false })),
    },
    Case {
        id: "server_primary_failover_postgres",
        group: Group::Server,
        guarantee: "PostgreSQL primary killed (immediate stop), streaming standby promoted, clients \
                    redirected: one holder, tokens grow, no acknowledged item lost, no stuck or silent hold",
        needs: &[Need::Lock, Need::Election, Need::Queue],
        // PostgreSQL declares it false (no synchronous standby is assumed); with a
        // synchronous standby the backend's own test requires it to hold.
        claim: SURVIVES_FAILOVER,
        // The pair is private servers: only the standby-pair harness offers both.
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
    Case {
        id: "api_invalid_names_and_arguments",
        group: Group::Api,
        guarantee: "invalid names and arguments are typed errors",
        needs: &[],
        claim: Claim::Contract,
        hooks: &[],
        run: |h| boxed(api::invalid_names_and_arguments(h)),
    },
    Case {
        id: "api_names_do_not_collide",
        group: Group::Api,
        guarantee: "distinct (kind, name) pairs never share a key: nested, alike and random names",
        needs: &[],
        claim: Claim::Contract,
        hooks: &[],
        run: |h| boxed(names::do_not_collide(h)),
    },
    Case {
        id: "api_timed_acquisition",
        group: Group::Api,
        guarantee: "every blocking call's *_timeout gives Timeout and leaves nothing behind",
        needs: &[],
        claim: Claim::Contract,
        hooks: &[],
        run: |h| boxed(timed::every_blocking_call(h)),
    },
    Case {
        id: "api_capabilities_match",
        group: Group::Api,
        guarantee: "undeclared primitives and levels say Unsupported",
        needs: &[],
        claim: Claim::Contract,
        hooks: &[],
        run: |h| boxed(api::capabilities_match(h)),
    },
];

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
}
