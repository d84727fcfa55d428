//! Reading the durable state of the schema for migration ([`distsync_core::migrate`]).
//!
//! Queues (in dequeue order), STM keys, held barriers, counters and latches are read in one
//! `REPEATABLE READ` read-only transaction, so they form one snapshot. Live holds are the
//! entries of live sessions (locks, read and write holds, candidacies and permits,
//! waiters included, see [`crate::waiter_line`]) and the double-barrier entries of live
//! sessions; they are listed by their keys (`<schema>/<kind>/<name>/<session hex>`, a semaphore's
//! with `/<entry>` after it, as its permits' keys) and not copied.
//!
//! # Claims left in flight
//! An at-most-once dequeue moves its item from `queue_items` to `queue_inflight` and
//! deletes the record once the item is handed over; a record still there is the claim
//! of a dequeuer that died in between. A migration runs on a quiesced source, so every
//! such record is a dead dequeuer's, and the source itself would deliver its item again
//! once the claim is older than `stale_claim=`: the sweep moves it back to
//! `queue_items` with its id and priority. Dropping it would lose an item on migration,
//! so its item is exported as a queue item where the sweep puts it back: ordered with
//! the queue's items by priority, then id (the claim keeps the id the item had, so it
//! goes back before the items that arrived after it, normally at the front of its
//! priority). The claim moves the item out of `queue_items` in the statement that
//! records it, so an item is in one table or the other; a record whose id is in
//! `queue_items` all the same is skipped, and of records sharing an id one is kept, as
//! the sweep's `ON CONFLICT (id) DO NOTHING` puts back one item. A live source must not
//! be migrated, as for every other item: a claim in flight there may be handed over
//! after the export and be delivered twice.

use std::collections::BTreeMap;

use distsync_core::migrate::{LatchState, QueueItem, Snapshot};
use distsync_core::{Bytes, Error, Name, Result};

use sqlx::postgres::PgConnection;

use crate::connection::transaction::{PgTransaction, READ_ONLY};
use crate::error::{map, BACKEND};
use crate::store::Shared;

fn name(raw: String) -> Result<Name> {
    Name::new(raw)
        .map_err(|error| Error::backend(BACKEND, format!("a stored name is invalid: {error}")))
}

/// Reads every queue's items into `queues`, with the items of claims left in flight
/// (see "Claims left in flight"), each id once, in the order the sweep's put-back
/// leaves them.
async fn read_queues(
    shared: &Shared,
    conn: &mut PgConnection,
    queues: &mut BTreeMap<Name, Vec<QueueItem>>,
) -> Result<()> {
    let items: Vec<(String, i32, Vec<u8>, bool)> = sqlx::query_as(&shared.sql(
        "SELECT queue, priority, item, claimed FROM ( \
             SELECT id, queue, priority, item, false AS claimed FROM {s}.queue_items \
             UNION ALL \
             (SELECT DISTINCT ON (f.id) f.id, f.queue, f.priority, f.item, true \
              FROM {s}.queue_inflight f \
              WHERE NOT EXISTS (SELECT 1 FROM {s}.queue_items i WHERE i.id = f.id) \
              ORDER BY f.id, f.claimed_at)) listed \
         ORDER BY queue, priority, id",
    ))
    .fetch_all(conn)
    .await
    .map_err(map)?;
    let claimed = items.iter().filter(|(.., claimed)| *claimed).count();
    if claimed > 0 {
        tracing::info!(
            claimed,
            "exported the items of at-most-once dequeue claims left in flight as queue items \
             at their place: the source delivers them again once the claims are stale, so \
             leaving them out would lose them on migration"
        );
    }
    for (queue, priority, item, _) in items {
        let priority = u16::try_from(priority).map_err(|_| {
            Error::backend(
                BACKEND,
                format!("queue {queue:?} holds an item of priority {priority}"),
            )
        })?;
        queues.entry(name(queue)?).or_default().push(QueueItem {
            priority,
            item: Bytes::from(item),
        });
    }
    Ok(())
}

/// Reads the snapshot.
pub(crate) async fn export(shared: &Shared) -> Result<Snapshot> {
    let mut tx = PgTransaction::begin(&shared.pool, Some(READ_ONLY))
        .await
        .map_err(map)?;
    let mut snapshot = Snapshot::default();

    read_queues(shared, &mut tx, &mut snapshot.queues).await?;

    let keys: Vec<(String, Vec<u8>)> =
        sqlx::query_as(&shared.sql("SELECT key, value FROM {s}.kv ORDER BY key"))
            .fetch_all(&mut *tx)
            .await
            .map_err(map)?;
    for (key, value) in keys {
        snapshot.stm.insert(name(key)?, Bytes::from(value));
    }

    let barriers: Vec<String> =
        sqlx::query_scalar(&shared.sql("SELECT name FROM {s}.barriers ORDER BY name"))
            .fetch_all(&mut *tx)
            .await
            .map_err(map)?;
    for barrier in barriers {
        snapshot.barriers.push(name(barrier)?);
    }

    let counters: Vec<(String, i64)> = sqlx::query_as(&shared.sql(crate::status::COUNTERS))
        .bind("")
        .fetch_all(&mut *tx)
        .await
        .map_err(map)?;
    for (counter, value) in counters {
        snapshot.counters.insert(name(counter)?, value);
    }
    let latches: Vec<(String, i64, i64)> = sqlx::query_as(&shared.sql(crate::status::LATCHES))
        .bind("")
        .fetch_all(&mut *tx)
        .await
        .map_err(map)?;
    for (latch, initial, remaining) in latches {
        let state = match (u64::try_from(initial), u64::try_from(remaining)) {
            (Ok(initial), Ok(remaining)) if remaining <= initial => {
                LatchState { initial, remaining }
            }
            _ => {
                return Err(Error::backend(
                    BACKEND,
                    format!("latch {latch:?} holds {remaining} of {initial}: not a latch"),
                ))
            }
        };
        snapshot.latches.insert(name(latch)?, state);
    }

    // Entries of live sessions (holders and waiters): locks, read-write locks and
    // candidacies by their hold keys, permits by theirs; and double-barrier entries.
    let holds: Vec<(String, String, i64, Option<i64>)> = sqlx::query_as(&shared.sql(
        "SELECT DISTINCT n.kind, n.name, e.session_id, \
                CASE WHEN n.kind = 'semaphore' THEN e.entry END \
         FROM {s}.line_entries e \
         JOIN {s}.lock_names n ON n.id = e.name_id \
         JOIN {s}.sessions x ON x.id = e.session_id \
         WHERE NOT e.cancelled AND x.expires_at > clock_timestamp() \
         UNION \
         SELECT 'double_barrier', e.name, e.session_id, NULL \
         FROM {s}.double_barrier_entries e JOIN {s}.sessions x ON x.id = e.session_id \
         WHERE x.expires_at > clock_timestamp() \
         ORDER BY 1, 2, 3, 4",
    ))
    .fetch_all(&mut *tx)
    .await
    .map_err(map)?;
    snapshot.active_holds = holds
        .into_iter()
        .map(|(kind, name, session, entry)| match entry {
            Some(entry) => format!("{}/{kind}/{name}/{session:x}/{entry}", shared.schema),
            None => format!("{}/{kind}/{name}/{session:x}", shared.schema),
        })
        .collect();

    tx.commit().await.map_err(map)?;
    Ok(snapshot)
}
