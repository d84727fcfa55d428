//! When the store forgets: the lock-delay before any grant, and fencing tokens that
//! keep growing.
//!
//! A Redis without persistence restarts empty. Without a guard, a new client is
//! granted a lock within milliseconds while the old holder still believes it holds
//! until its next renewal finds its session gone (up to a third of its TTL later) or
//! its client-side deadline passes. Chubby closes this with a grace period after a
//! master fail-over; the same is done here, per waiter line (lock, read-write lock,
//! election, semaphore), on the server, inside the scripts that grant.
//!
//! **The epoch marker.** Every waiter line keeps a marker key `p:epoch` next to its
//! other keys (`p = {<ns><name>}:<kind>`, so under Redis Cluster it shares the line's
//! hash slot and the grant script reads it where it runs). Its value is `0` once
//! grants are allowed, else the store time (ms, from `TIME`) before which the line
//! grants nothing. Every script that grants (`fq_settle` in `lua/lib.lua`, and the
//! uncontended path of `lua/fair_acquire.lua`) reads it first: one `GET`, in the same
//! script, no extra round trip (and a `TIME` only while a lock-delay runs). The marker
//! is made persistent by every join and idles out with the line's counters, an hour
//! after the line empties.
//!
//! **A missing marker** means the store forgot the line (a restart without
//! persistence, a `FLUSHALL`) or never knew it (a new name, or one idle for an hour).
//! Then nothing is granted until `fair_acquire.lua`, which carries the bound below,
//! sets it again (`epoch_start`): the line waits until `max_session_ttl` after the
//! server started, `max(0, max_session_ttl - (uptime - 1 s))` from now
//! (`uptime_in_seconds` of `INFO server`, read by the script itself only on this
//! path; the difference of two whole-second clocks, it may count up to a second
//! more than has passed, hence the second taken off). Every session the
//! server may have held before it started again was opened before it started, with a
//! TTL of at most `max_session_ttl`, so its holder's client-side deadline (renewal
//! sent + TTL - margin) passes before the wait ends, and its `lost()` (and the CLI's
//! signal to its command) comes before anyone else is granted. A new name on a server
//! up for longer than the bound waits for nothing; a brand-new server (up for less)
//! makes a new name's first grant wait for the rest of the bound, once.
//!
//! **The bound is enforced, not hoped:** with [`crate::RedisOptions::max_session_ttl`]
//! (`max_session_ttl=` in the URL) a session with a longer TTL is refused
//! ([`distsync_core::Error::InvalidArgument`]). Without it there is no bound, and the
//! marker is set with no wait: clients that do not opt in keep today's behaviour
//! (a restart without persistence can grant a second holder before the first one's
//! `lost()`). Every client of one namespace must give the same bound, or a larger
//! one: the wait is the bound of the client that finds the marker missing.
//!
//! **Fencing tokens.** When the marker is set again, the line's fencing counter is
//! raised to the store clock at the end of the wait, in microseconds, if it is below:
//! every token the forgotten state handed out was at most the server clock of its
//! grant (the counter is seeded from the clock and grows by one per grant, see
//! `counter_next`), so the tokens after the wait are above all of them, provided the
//! server clocks agree to within the wait.
//!
//! **Failovers.** A replica promoted without acknowledgement (Sentinel or Cluster, no
//! `wait_replicas`) keeps the markers it had replicated while possibly missing the
//! grants the old primary made last. Clients that fail over that way (the lock-delay
//! on, `redis+sentinel://` or `redis+cluster://`, `wait_replicas=0`) watch for it:
//! the marker of a line they use records the replication id of the server that set
//! it, in its own value (`<at>:<rid>`, so the grant's one `GET` of the marker reads
//! both), `master_replid` of `INFO replication`: random at each start, shared by a
//! primary and its replicas, new on a replica promoted to primary. Every grant path
//! that reads the marker (`epoch_wait`) compares it with the server's id. Under
//! Sentinel the client reads that id once per connection to a primary (checking
//! `role:master`) and passes it with the grant ([`replid_arg`]); the connection is
//! dropped when the server stops being that primary (a `READONLY` answer, or the
//! Sentinels' `CLIENT KILL` when they reconfigure it), so the id it passes is the id
//! of the server it talks to. Where the client does not know the id (Redis Cluster,
//! whose client hides which node a call reaches; a release; a connection whose
//! server was not a primary when it connected) the script asks `INFO replication`
//! itself, once per run, and only on a line whose marker records an id. Another id
//! means the line's state may be older than what its holders were told: nothing is
//! granted until `max_session_ttl` after the first grant attempt that saw it (after
//! the promotion, so after every holder the old primary knew has seen its `lost()`),
//! and the fencing counter is raised above the store clock at the end of the wait,
//! whatever older value the replica had. With `wait_replicas` nothing acknowledged is
//! lost and nothing is watched.
//!
//! **New lines after a promotion.** A line the replica never saw (made on the old
//! primary during the lag) has no marker at all, as a brand-new name has: on a server
//! promoted since it started (`second_repl_offset` of `INFO replication` set), a
//! missing marker waits, for watching clients, until `max_session_ttl` after the
//! promotion, and no longer: the old primary granted those holds before the
//! promotion, so their holders' client-side deadlines pass within the bound of it.
//! Redis keeps no promotion time; what the wait counts from is the first time a grant
//! script saw the promotion, at or after it, kept on the server in the *promotion
//! record* (`promotion_left` in `lua/lib.lua`), `<rid>:<ms>`: the replication id of
//! the promoted server (new at each promotion, so a record of an earlier one reads as
//! missing) and the store time it was first seen. The first new line to find it
//! missing records now and waits the whole bound; every later new line, of any
//! client, waits what is left of it (`max(0, seen + max_session_ttl - now)`), so once
//! the bound has passed after the promotion, a new name is granted at once. The
//! record is one key per namespace, `{<ns>promoted}`; under Redis Cluster, where a
//! script touches one hash slot only, one per slot, in the line's slot
//! ([`crate::promotion_record`]): there the first new line of each slot after a
//! promotion records it (and waits), not the first of the namespace. It is a grant
//! script's declared key (`KEYS[2]`). It has no TTL: should it expire, the next new
//! line would find it missing and wait the whole bound again, long after the window
//! it protects; it is one short key per namespace (per slot used under Cluster),
//! replaced by the next promotion. A line whose marker names another replication id
//! still waits the whole bound from the first grant attempt that sees it (the line
//! was in use around the promotion). Like the rest of this scheme, the record counts
//! from the promotion the replica saw: an old primary cut off by a partition that
//! goes on granting after it is outside what the lock-delay covers.
//!
//! **What it does not see.** A `FLUSHALL` on a server that has been up for longer than
//! the bound: the markers are gone, the uptime says nothing was lost, and grants
//! resume at once (an operator action; restart the server instead, or flush only
//! while no client holds). A replica promoted by hand (`REPLICAOF NO ONE`) behind a
//! `redis://` URL: the client does not know the store fails over, and does not
//! watch. The queue's items and STM keys are data, not holds: a restart without
//! persistence or a failover without acknowledgement loses them whatever the
//! lock-delay does (`survives_restart` in the capabilities needs `appendfsync
//! always`, `survives_failover` needs `wait_replicas`); what the lock-delay gives is
//! `exclusive_across_restart`, and across a failover `exclusive_across_failover`.

use std::time::Duration;

use distsync_core::Result;

use crate::store::Shared;
use crate::target::REPLID_OF_CONNECTION;

/// The bound on session TTLs the grant script gets (ms; `0`: none, no lock-delay).
pub(crate) fn max_ttl_ms(shared: &Shared) -> u64 {
    shared.max_session_ttl.map_or(0, crate::call::millis)
}

/// Whether the grant scripts watch for a replica promoted without acknowledgement
/// (see the module docs, "Failovers"): with the lock-delay on, under Sentinel or
/// Redis Cluster, without `wait_replicas` (with it, the promoted replica has every
/// acknowledged grant, and waiting would only cost time). `"1"` or `"0"`, as the
/// grant script takes it.
pub(crate) fn watch_arg(shared: &Shared) -> &'static str {
    if shared.max_session_ttl.is_some() && shared.fails_over() && !shared.acknowledges() {
        "1"
    } else {
        "0"
    }
}

/// The replication id argument of a grant script call (see the module docs,
/// "Failovers"): under Sentinel, [`REPLID_OF_CONNECTION`], which the sending connection
/// replaces; elsewhere empty (one server is never watched, and under Redis Cluster the
/// client does not know which node the call reaches), which makes the script ask
/// `INFO replication` on the lines whose marker records an id.
pub(crate) fn replid_arg(shared: &Shared) -> &'static str {
    if shared.follows_sentinels() {
        REPLID_OF_CONNECTION
    } else {
        ""
    }
}

/// Refuses a session TTL above the store's bound ([`crate::RedisOptions::max_session_ttl`]),
/// the bound the lock-delay after amnesia relies on.
///
/// # Errors
/// [`distsync_core::Error::InvalidArgument`] for a TTL above the bound.
pub(crate) fn check_ttl(shared: &Shared, ttl: Duration) -> Result<()> {
    distsync_core::raw::check_session_ttl(ttl, shared.max_session_ttl)
}
