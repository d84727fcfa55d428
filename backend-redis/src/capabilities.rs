//! What the Redis backend is called ([`BACKEND`]), the shortest session it accepts
//! ([`MIN_SESSION_TTL`]), and what it claims on a server that never evicts keys, on
//! one that may, and under Sentinel (see the crate documentation for why): each on a
//! server without persistence; [`measured`] adds what the server's persistence
//! settings, read at connect, give.

use std::time::Duration;

use distsync_core::Capabilities;

/// The backend's name, as it appears in [`Capabilities::backend`], in errors
/// ([`Error::Connection`] and the others name the backend) and in log fields.
///
/// [`Capabilities::backend`]: distsync_core::Capabilities::backend
/// [`Error::Connection`]: distsync_core::Error::Connection
pub const BACKEND: &str = "redis";

/// The shortest session TTL the backend accepts ([`Capabilities::min_session_ttl`];
/// a shorter one is [`Error::InvalidArgument`]). Keys carry the TTL as a
/// millisecond `PX` and the keepalive renews every third of it, so 100 ms leaves a
/// renewal about 33 ms to make its round trip; a session that must survive a
/// loaded server or network wants seconds.
///
/// [`Capabilities::min_session_ttl`]: distsync_core::Capabilities::min_session_ttl
/// [`Error::InvalidArgument`]: distsync_core::Error::InvalidArgument
pub const MIN_SESSION_TTL: Duration = Duration::from_millis(100);

/// What the Redis backend offers and claims on a server that never evicts keys
/// (`maxmemory-policy noeviction`, which [`crate::backend()`] checks) and runs
/// without an append-only file fsynced on every write; see the crate documentation
/// for why. A connected backend's [`Primitives::capabilities`] are the ones measured at
/// connect: these, plus `survives_restart` on a server with `appendonly yes` and
/// `appendfsync always` ([`crate::Persistence::survives_restart`]).
///
/// `unfair_lock` is claimed here and in every other configuration (eviction, Sentinel,
/// Cluster): the unfair lock's keys share the lock's hash slot, its grants and releases
/// are script runs acknowledged as any other (`wait_replicas`), and it keeps what the
/// configuration's fair lock keeps.
///
/// [`Primitives::capabilities`]: distsync_core::raw::Primitives::capabilities
pub fn capabilities() -> Capabilities {
    Capabilities::all(BACKEND, MIN_SESSION_TTL)
        .with_max_value_size(MAX_VALUE_SIZE)
        // Redis is not the caller's database: no transaction of the caller's to join.
        .with_caller_transactions(false)
        .with_survives_restart(false)
        // A restart without persistence forgets every hold: a new client is granted
        // at once while the old holder learns it lost only at its next renewal. A
        // connected backend declares it with `appendfsync always` or a lock-delay
        // (`max_session_ttl`), see `measured`.
        .with_exclusive_across_restart(false)
        .with_linearizable(false)
        // One server: a failover to a replica (done by hand, or under Sentinel without
        // replica acknowledgement, see `capabilities_under_sentinel`) may lose what
        // was acknowledged.
        .with_survives_failover(false)
        // `LockGuard::put_if_held`: one script checks the grant and writes
        // (`crate::guarded`).
        .with_guarded_writes(true)
        // `Queue::receive`: a hold key in the session's registry (`crate::queue`).
        .with_reliable_delivery(true)
}

/// The largest value the Redis backend takes from a caller: 16 MiB. Redis itself
/// takes strings up to its `proto-max-bulk-len`, 512 MB by default, but a script
/// that copies a value that large holds the server's one thread for as long, and
/// every client of the server waits; coordination values are small, and a bound that
/// every store documents beats one that only a full server finds.
pub const MAX_VALUE_SIZE: usize = 16 * 1024 * 1024;

/// What the Redis backend claims on a server that may evict keys, accepted with
/// `allow_eviction=true` in the URL: [`capabilities`] without `fencing` (an evicted
/// counter starts again), `fifo_waiters` (an evicted waiter line loses its order) and
/// `reliable_delivery` (an evicted hold key or held-item record loses its item).
/// Mutual exclusion itself is weakened too, which no flag expresses: an evicted entry
/// lets the next waiter in while its holder learns of the loss only at its next
/// renewal; and evicted queue items are lost.
pub fn capabilities_under_eviction() -> Capabilities {
    capabilities()
        .with_fencing(false)
        .with_fifo_waiters(false)
        .with_reliable_delivery(false)
}

/// What the Redis backend claims on a Redis Cluster (`redis+cluster://`): as under
/// Sentinel ([`capabilities_under_sentinel`]: a master's failover to its replica is a
/// Sentinel failover for the slots it served), without `guarded_writes`.
///
/// `export` stays: a migration's export, `status` and the group member lists built on
/// it scan every master and read each hash slot with a script of its own
/// (`crate::scan`, `crate::export`, `crate::status`), which lists every name present
/// throughout the scan but reads the namespace at no one instant.
///
/// A break, a release request and a hand-over are offered: they read the holder or
/// the candidates from the name's own slot (`Backend::status_of`, one script call)
/// and then act elsewhere (on the holder's session, a request counter, the hand-over
/// records), each step safe on its own, as on one server.
///
/// `LockGuard::put_if_held` checks a lock's grant and writes an STM key in one script
/// on one server; under Cluster the two live in different hash slots, which no script
/// may span, and no two-step form keeps its promise, a write that commits only while
/// the hold is current. A fence in the STM slot that every grant raises before it is
/// reported (the write then checks the hold in the lock's slot, then the fence in the
/// STM slot) still lets a write checked just before the hold ends land after it
/// ended, until the next holder raises the fence; one fence cannot tell a semaphore's
/// permits apart (they hold at once, under different tokens); and every grant of the
/// cluster would wait on the one master of the STM slot. Writing the guarded key
/// under the lock's hash tag instead takes it out of the STM, whose keys share one
/// slot so that a transaction can read and write several of them, and where the
/// write's readers look for it.
pub fn capabilities_under_cluster(wait_replicas: u32) -> Capabilities {
    capabilities_under_sentinel(wait_replicas).with_guarded_writes(false)
}

/// What the Redis backend claims under Sentinel (`redis+sentinel://`): with replica
/// acknowledgement (`wait_replicas` of 1 or more) [`capabilities`] plus
/// `survives_failover`; without it, neither `survives_failover` nor `fencing` (the
/// promoted replica may lack the last increments of a fencing-token counter, so
/// tokens can go backwards), and two holders of one lock become possible across a
/// failover. See the crate docs, "Sentinel and replica acknowledgement". A connected
/// backend with the lock-delay (`max_session_ttl`) declares `fencing` again: its
/// grant scripts see the promotion and wait it out (see `crate::amnesia`).
pub fn capabilities_under_sentinel(wait_replicas: u32) -> Capabilities {
    if wait_replicas > 0 {
        capabilities().with_survives_failover(true)
    } else {
        capabilities().with_fencing(false)
    }
}

/// How the backend reaches its data, as far as its capabilities go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Topology {
    /// One server (`redis://`, `rediss://`, or a client of the caller's own).
    Server,
    /// A primary found through Sentinels (`redis+sentinel://`).
    Sentinel,
    /// A Redis Cluster (`redis+cluster://`).
    Cluster,
}

/// What a connected backend declares: the claims of its topology, or those under
/// eviction when the server may evict keys (accepted with `allow_eviction=true`),
/// with `survives_restart` when the server's persistence makes every acknowledged
/// write `durable` ([`crate::Persistence::survives_restart`]) and nothing is evicted
/// (an evicted queue item or STM key is gone whatever the disk holds), and with
/// `exclusive_across_restart` when nothing is evicted and either the writes are
/// `durable` or the `lock_delay` after the store forgets is on
/// ([`crate::RedisOptions::max_session_ttl`], see `crate::amnesia`): an evicted
/// waiter line lets the next waiter in at once, which no lock-delay sees. The
/// lock-delay also gives `fencing` back under Sentinel and Redis Cluster without
/// replica acknowledgement: the grant scripts then watch for a promoted replica and
/// raise its fencing counters above every token the old primary handed out.
pub(crate) fn measured(
    topology: Topology,
    wait_replicas: u32,
    evicting: bool,
    durable: bool,
    lock_delay: bool,
) -> Capabilities {
    let claimed = if evicting {
        capabilities_under_eviction()
    } else {
        match topology {
            Topology::Server => capabilities(),
            Topology::Sentinel => capabilities_under_sentinel(wait_replicas),
            Topology::Cluster => capabilities_under_cluster(wait_replicas),
        }
    };
    let fencing = claimed.fencing || (!evicting && lock_delay);
    claimed
        .with_survives_restart(!evicting && durable)
        .with_exclusive_across_restart(!evicting && (durable || lock_delay))
        .with_fencing(fencing)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPOLOGIES: [Topology; 3] = [Topology::Server, Topology::Sentinel, Topology::Cluster];

    #[test]
    fn survives_restart_only_with_every_write_durable_and_nothing_evicted() {
        for topology in TOPOLOGIES {
            for wait_replicas in [0, 1] {
                for lock_delay in [false, true] {
                    let claims = |evicting, durable| {
                        measured(topology, wait_replicas, evicting, durable, lock_delay)
                            .survives_restart
                    };
                    assert!(!claims(false, false), "{topology:?}");
                    assert!(claims(false, true), "{topology:?}");
                    assert!(!claims(true, true), "{topology:?}");
                }
                // Nothing else changes with persistence.
                assert_eq!(
                    measured(topology, wait_replicas, false, true, false),
                    measured(topology, wait_replicas, false, false, false)
                        .with_survives_restart(true)
                        .with_exclusive_across_restart(true)
                );
            }
        }
        assert_eq!(
            measured(Topology::Server, 0, false, false, false),
            capabilities()
        );
        assert_eq!(
            measured(Topology::Sentinel, 1, false, false, false),
            capabilities_under_sentinel(1)
        );
        assert_eq!(
            measured(Topology::Cluster, 0, false, false, false),
            capabilities_under_cluster(0)
        );
        assert_eq!(
            measured(Topology::Cluster, 1, true, true, true),
            capabilities_under_eviction()
        );
    }

    #[test]
    fn the_unfair_lock_is_offered_wherever_the_lock_is() {
        for topology in TOPOLOGIES {
            for wait_replicas in [0, 1] {
                for (evicting, durable, lock_delay) in [(false, false, false), (true, true, true)] {
                    let claims = measured(topology, wait_replicas, evicting, durable, lock_delay);
                    assert!(claims.unfair_lock, "{topology:?}");
                }
            }
        }
    }

    #[test]
    fn exclusive_across_restart_with_durable_writes_or_a_lock_delay_and_nothing_evicted() {
        for topology in TOPOLOGIES {
            for wait_replicas in [0, 1] {
                let claims = |evicting, durable, lock_delay| {
                    measured(topology, wait_replicas, evicting, durable, lock_delay)
                        .exclusive_across_restart
                };
                assert!(!claims(false, false, false), "{topology:?}");
                assert!(claims(false, true, false), "{topology:?}");
                assert!(claims(false, false, true), "{topology:?}");
                assert!(claims(false, true, true), "{topology:?}");
                assert!(!claims(true, true, true), "{topology:?}");
                assert!(!claims(true, false, true), "{topology:?}");
                // The lock-delay holds holds, not data.
                assert!(!measured(topology, wait_replicas, false, false, true).survives_restart);
                // It gives fencing back where a failover without acknowledgement took
                // it, and survives_failover (acknowledged data) stays as it was.
                let delayed = measured(topology, wait_replicas, false, false, true);
                assert!(delayed.fencing, "{topology:?}");
                assert_eq!(
                    delayed.survives_failover,
                    measured(topology, wait_replicas, false, false, false).survives_failover
                );
                assert!(!measured(topology, wait_replicas, true, false, true).fencing);
            }
        }
        assert!(!capabilities().exclusive_across_restart);
    }
}
