//! The store's epoch as this client reads and writes it: the cluster's
//! `system_identifier` and the epoch marker read at connect, the check after a session
//! was found gone, and the marker, token floor and lock-delay written after the store
//! forgot. What the readings mean, and the lock-delay, are [`crate::amnesia`]'s.
//! Under unflushed grants, also the crash sentinel: read (or written again, after a
//! crash) at connect, and what follows when the heartbeat finds it moved (see
//! [`crate::unflushed_grants`]).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use distsync_core::{Error, Result};

use crate::amnesia::{fresh_id, Marker, Seen};
use crate::connection::transaction::PgTransaction;
use crate::error::{map, sqlstate, BACKEND};
use crate::schema;
use crate::store::Shared;

/// The cluster's `system_identifier`, or `None` where the role may not read it.
async fn system_id(shared: &Shared) -> Result<Option<i64>> {
    match sqlx::query_scalar::<_, i64>("SELECT system_identifier FROM pg_control_system()")
        .fetch_one(shared.bounded())
        .await
    {
        Ok(id) => Ok(Some(id)),
        Err(error) if matches!(sqlstate(&error).as_deref(), Some("42501" | "42883")) => {
            tracing::debug!(backend = BACKEND, %error, "the system_identifier cannot be read");
            Ok(None)
        }
        Err(error) => Err(map(error)),
    }
}

/// The marker, or the database's error.
async fn read_marker(shared: &Shared) -> std::result::Result<Option<Marker>, sqlx::Error> {
    let row: Option<(String, i64, i64, i64)> = sqlx::query_as(&shared.sql(
        "SELECT id, ttl_ms, token_offset, \
                greatest(0, ceil(extract(epoch FROM hold_until - clock_timestamp()) * 1000))::bigint \
           FROM {s}.epoch_marker",
    ))
    .fetch_optional(shared.bounded())
    .await?;
    Ok(row.map(|(id, ttl, offset, hold)| Marker {
        id,
        ttl: Duration::from_millis(u64::try_from(ttl).unwrap_or(0)),
        offset,
        hold_left: Duration::from_millis(u64::try_from(hold).unwrap_or(0)),
    }))
}

/// At connect: the store this client knows, and under a bound the marker written where
/// there is none; a lock-delay the store has running is waited out by this client too.
///
/// # Errors
/// With a bound, the database's error (the lock-delay depends on the marker); without,
/// none (a marker that cannot be read only leaves detection to the
/// `system_identifier` and the counters).
pub(crate) async fn connected(shared: &Shared) -> Result<()> {
    let amnesia = &shared.amnesia;
    let found = async {
        let system_id = system_id(shared).await?;
        let marker = read_marker(shared).await.map_err(map)?;
        let marker = match (marker, amnesia.bound) {
            (None, Some(bound)) => {
                write_fresh_marker(shared, bound).await.map_err(map)?;
                read_marker(shared).await.map_err(map)?
            }
            (marker, _) => marker,
        };
        Ok::<_, Error>((system_id, marker))
    };
    match found.await {
        Ok((system_id, marker)) => {
            amnesia.adopt(system_id, marker.as_ref());
            if let Some(marker) = marker.filter(|marker| !marker.hold_left.is_zero()) {
                tracing::info!(
                    backend = BACKEND,
                    lock_delay = ?marker.hold_left,
                    "the store's lock-delay runs (a new store or one that forgot): grants \
                     through this client wait it out"
                );
                amnesia.hold_for(marker.hold_left);
            }
            Ok(())
        }
        Err(error) if amnesia.bound.is_some() => Err(error),
        Err(error) => {
            tracing::warn!(
                backend = BACKEND,
                %error,
                "the epoch marker cannot be read: a store that forgot is told by its \
                 system_identifier and counters only"
            );
            Ok(())
        }
    }
}

/// A store with no marker, seen at connect by a client with `bound`: new, or one that
/// forgot, and nothing tells which. Writes the marker with a lock-delay of the bound,
/// and seeds the token floor and every name's counter from the server's clock in
/// microseconds, in one transaction: tokens then start above every token of a store
/// before it, whether or not an old holder's client publishes its own in time (see
/// the module docs). The floor row first, as `record` takes it. A marker another
/// client wrote meanwhile stays; the counters raised stay too (they only grow).
async fn write_fresh_marker(
    shared: &Shared,
    bound: Duration,
) -> std::result::Result<(), sqlx::Error> {
    let ttl_ms = schema::millis(bound);
    let mut tx = PgTransaction::begin(&shared.pool, None).await?;
    let seed: i64 = sqlx::query_scalar(&shared.sql(
        "UPDATE {s}.token_floor \
            SET floor = greatest(floor, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint) \
         RETURNING floor",
    ))
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(&shared.sql("UPDATE {s}.lock_names SET token = $1 WHERE token < $1"))
        .bind(seed)
        .execute(&mut *tx)
        .await?;
    sqlx::query(&shared.sql(
        "INSERT INTO {s}.epoch_marker (id, ttl_ms, token_offset, hold_until) \
         VALUES ($1, $2, $3, clock_timestamp() + $2 * interval '1 millisecond') \
         ON CONFLICT (one) DO NOTHING",
    ))
    .bind(fresh_id())
    .bind(ttl_ms)
    .bind(seed)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Raises the marker's TTL to `ttl` (a session longer than any before).
pub(crate) async fn raise_marker_ttl(shared: &Shared, ttl: Duration) {
    let ttl_ms = schema::millis(ttl);
    let raised =
        sqlx::query(&shared.sql("UPDATE {s}.epoch_marker SET ttl_ms = greatest(ttl_ms, $1)"))
            .bind(ttl_ms)
            .execute(shared.bounded())
            .await;
    match raised {
        Ok(_) => {
            let mut state = shared.amnesia.state();
            state.marker_ttl = state.marker_ttl.max(ttl);
        }
        Err(error) => {
            tracing::debug!(backend = BACKEND, error = %map(error), "raising the marker's TTL failed");
        }
    }
}

/// What the store looks like now (see the module docs).
async fn look(shared: &Shared) -> Result<Seen> {
    let mut seen = Seen {
        system_id: system_id(shared).await?,
        ..Seen::default()
    };
    let read =
        sqlx::query_as::<_, (Option<String>, Option<i64>, Option<i64>, Option<i64>)>(&shared.sql(
            "SELECT m.id, m.ttl_ms, m.token_offset, \
                    greatest((SELECT max(floor) FROM {s}.token_floor), \
                             (SELECT max(token) FROM {s}.lock_names)) \
               FROM (SELECT 1) AS one LEFT JOIN {s}.epoch_marker m ON true",
        ))
        .fetch_one(shared.bounded())
        .await;
    match read {
        Ok((id, ttl, offset, top)) => {
            seen.top_token = top;
            seen.marker = id.map(|id| Marker {
                id,
                ttl: Duration::from_millis(ttl.and_then(|t| u64::try_from(t).ok()).unwrap_or(0)),
                offset: offset.unwrap_or(0),
                hold_left: Duration::ZERO,
            });
        }
        Err(error) if schema::is_missing_object(&error) => {
            let schema_there: bool = sqlx::query_scalar("SELECT to_regnamespace($1) IS NOT NULL")
                .bind(shared.sql("{s}"))
                .fetch_one(shared.bounded())
                .await
                .map_err(map)?;
            // A schema still there without its objects was damaged by hand: that is
            // reported, not repaired.
            if schema_there {
                return Err(map(error));
            }
            seen.schema_gone = true;
        }
        Err(error) => return Err(map(error)),
    }
    Ok(seen)
}

/// How often [`check_soon`] tries while the store does not answer.
const RETRY: Duration = Duration::from_millis(500);

/// A session was found gone (a renewal found its row gone, or it was lost with its
/// renewals failing until its deadline, as while a server is wiped and made again):
/// checks in the background whether the store forgot (see the module docs; if so,
/// [`forgot`]), once it answers, trying every [`RETRY`] while it does not (nothing is
/// judged from a store that could not be read), as long as the backend lives. One
/// check runs at a time: the sessions found gone while it runs are covered by one more
/// check after it (not one each).
pub(crate) fn check_soon(shared: &Arc<Shared>) {
    let amnesia = &shared.amnesia;
    amnesia.requested.fetch_add(1, Ordering::SeqCst);
    if amnesia.pending.swap(true, Ordering::SeqCst) {
        return;
    }
    let failed = "could not check yet whether the store forgot";
    until_done(shared, failed, |shared| async move {
        let amnesia = &shared.amnesia;
        let asked = amnesia.requested.load(Ordering::SeqCst);
        let seen = look(&shared).await?;
        if let Some(reason) = amnesia.judge(&seen) {
            forgot(&shared, &seen, reason, None).await;
        }
        if amnesia.requested.load(Ordering::SeqCst) != asked {
            return Ok(false);
        }
        amnesia.pending.store(false, Ordering::SeqCst);
        // A request that came between the load and the store found the check pending
        // and left it to this one.
        Ok(amnesia.requested.load(Ordering::SeqCst) == asked
            || amnesia.pending.swap(true, Ordering::SeqCst))
    });
}

/// Runs `step` in the background until it answers `true`, again at once after `false`
/// and every [`RETRY`] while it fails (`failed` says so in a debug line), as long as
/// the backend lives: the backend is not kept alive between steps.
fn until_done<Step, Stepped>(shared: &Arc<Shared>, failed: &'static str, mut step: Step)
where
    Step: FnMut(Arc<Shared>) -> Stepped + Send + 'static,
    Stepped: std::future::Future<Output = Result<bool>> + Send,
{
    let weak: Weak<Shared> = Arc::downgrade(shared);
    tokio::spawn(async move {
        while let Some(shared) = weak.upgrade() {
            match step(shared).await {
                Ok(true) => return,
                Ok(false) => {}
                Err(error) => {
                    tracing::debug!(backend = BACKEND, %error, "{failed}");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    });
}

/// The store forgot this client's holds (for `reason`; `seen` is what it looks like
/// now): ends every session of the client (unless the caller ended them when it found
/// out, `ended` of them: sessions opened since are not the store's to forget), starts
/// the lock-delay and writes the floor and the marker into the store.
async fn forgot(shared: &Shared, seen: &Seen, reason: String, ended: Option<usize>) {
    let amnesia = &shared.amnesia;
    let delay = amnesia.delay(seen.marker.as_ref());
    let offset = amnesia.offset(seen);
    amnesia.hold_for(delay);
    let lost = ended.unwrap_or_else(|| shared.fail_all_sessions());
    tracing::warn!(
        backend = BACKEND,
        reason,
        lock_delay = ?delay,
        sessions_lost = lost,
        token_offset = offset,
        "the postgres store forgot this client's holds: every session of this client is \
         lost, and nothing is granted through it until the lock-delay has passed"
    );
    match record(shared, seen, offset, delay).await {
        Ok(marker) => amnesia.adopt(seen.system_id, Some(&marker)),
        Err(error) => {
            // Still the store this client knows from now on, so that it is not
            // detected again; the lock-delay of this client stands.
            amnesia.adopt(seen.system_id, None);
            amnesia.state().marker_id = None;
            tracing::warn!(
                backend = BACKEND,
                %error,
                "could not write the token floor and the epoch marker into the store that \
                 forgot: other clients may hand out tokens below this client's"
            );
        }
    }
}

/// The crash sentinel's id, written again (with the store's lock-delay first) where a
/// crash emptied it (`grant_sentinel`, see [`crate::unflushed_grants`]).
async fn sentinel_id(shared: &Shared) -> std::result::Result<String, sqlx::Error> {
    let bound = shared.amnesia.bound.unwrap_or(crate::MIN_SESSION_TTL);
    sqlx::query_scalar(&shared.sql("SELECT {s}.grant_sentinel($1)"))
        .bind(schema::millis(bound))
        .fetch_one(shared.bounded())
        .await
}

/// At connect, under unflushed grants: the crash sentinel this client's grants are made
/// under.
///
/// # Errors
/// The database's error (a schema dropped since the client connected included).
pub(crate) async fn sentinel_connected(shared: &Shared) -> Result<()> {
    if !shared.sentinel.enabled() {
        return Ok(());
    }
    let id = sentinel_id(shared).await.map_err(map)?;
    shared.sentinel.adopt(id);
    Ok(())
}

/// The server may have lost grants and releases this client was acknowledged while
/// their sessions live on: the heartbeat found the crash sentinel moved under unflushed
/// grants (see [`crate::unflushed_grants`]: the server crashed or a standby was
/// promoted), or a standby promoted that did not wait for every commit (see
/// [`crate::connection::promotion`]). If this client was `granted` anything since, that
/// is the store forgetting its holds: every session of the client is lost at once and
/// its lock-delay starts, here, before the store's own lock-delay (which the first
/// grant or this client starts) can end; then, in the background, the token floor and
/// the marker are written as after any forgetting. Under unflushed grants the sentinel
/// is read again either way (written again if missing), so that the grants from now on
/// are known to be made under it.
pub(crate) fn grants_may_be_lost(shared: &Arc<Shared>, reason: String, granted: bool) {
    let ended = granted.then(|| {
        let amnesia = &shared.amnesia;
        amnesia.hold_for(amnesia.delay(None));
        shared.fail_all_sessions()
    });
    if !granted {
        tracing::info!(
            backend = BACKEND,
            reason,
            "the crash sentinel moved; this client held no grant made before it"
        );
    }
    let failed = "could not read the store again yet after it may have lost grants";
    until_done(shared, failed, move |shared| {
        let reason = reason.clone();
        async move {
            let id = if shared.sentinel.enabled() {
                Some(sentinel_id(&shared).await.map_err(map)?)
            } else {
                None
            };
            if granted {
                let seen = look(&shared).await?;
                forgot(&shared, &seen, reason, ended).await;
            }
            if let Some(id) = id {
                shared.sentinel.adopt(id);
            }
            Ok(true)
        }
    });
}

/// Writes, after the store forgot, the schema's objects if they are gone, the token
/// floor (every counter raised to `offset`) and the marker with a lock-delay of
/// `delay`; returns the marker.
async fn record(shared: &Shared, seen: &Seen, offset: i64, delay: Duration) -> Result<Marker> {
    if seen.schema_gone {
        schema::ensure(&shared.pool, &shared.schema).await?;
    }
    let ttl_ms = schema::millis(delay);
    let mut tx = PgTransaction::begin(&shared.pool, None)
        .await
        .map_err(map)?;
    // The floor row first, as `prune_names` and `register_name` take it: a name
    // registered meanwhile starts at the raised floor.
    sqlx::query(&shared.sql("UPDATE {s}.token_floor SET floor = greatest(floor, $1)"))
        .bind(offset)
        .execute(&mut *tx)
        .await
        .map_err(map)?;
    sqlx::query(&shared.sql("UPDATE {s}.lock_names SET token = $1 WHERE token < $1"))
        .bind(offset)
        .execute(&mut *tx)
        .await
        .map_err(map)?;
    let (id, ttl, written_offset): (String, i64, i64) = sqlx::query_as(&shared.sql(
        "INSERT INTO {s}.epoch_marker AS m (id, ttl_ms, token_offset, hold_until) \
         VALUES ($1, $2, $3, clock_timestamp() + $2 * interval '1 millisecond') \
         ON CONFLICT (one) DO UPDATE SET \
             ttl_ms = greatest(m.ttl_ms, excluded.ttl_ms), \
             token_offset = greatest(m.token_offset, excluded.token_offset), \
             hold_until = greatest(m.hold_until, excluded.hold_until) \
         RETURNING id, ttl_ms, token_offset",
    ))
    .bind(fresh_id())
    .bind(ttl_ms)
    .bind(offset)
    .fetch_one(&mut *tx)
    .await
    .map_err(map)?;
    tx.commit().await.map_err(map)?;
    Ok(Marker {
        id,
        ttl: Duration::from_millis(u64::try_from(ttl).unwrap_or(0)),
        offset: written_offset,
        hold_left: delay,
    })
}
