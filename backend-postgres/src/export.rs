//! Reading the durable state of the schema for migration ([`distsync_core::migrate`]).
//!
//! Queues (in dequeue order), STM keys and held barriers are read in one
//! `REPEATABLE READ` read-only transaction, so they form one snapshot. Live holds are the
//! advisory locks of this schema held or awaited by session connections (locks, read and
//! write holds, candidacies, waiters included), the grants of unexpired sessions whose
//! connection is gone (held back from others until then, see [`crate::hold`]), the
//! double-barrier entries of live sessions, and the semaphore entries of live sessions;
//! they are listed by their keys (`<schema>/<kind>/<name>/<session hex>`, a semaphore's
//! with `/<entry>` after it, as its permits' keys) and not copied.

use distsync_core::migrate::{QueueItem, Snapshot};
use distsync_core::{Bytes, Error, Name, Result};

use crate::error::{map, BACKEND};
use crate::shared::Shared;

fn name(raw: String) -> Result<Name> {
    Name::new(raw)
        .map_err(|error| Error::backend(BACKEND, format!("a stored name is invalid: {error}")))
}

/// Reads the snapshot.
pub(crate) async fn export(shared: &Shared) -> Result<Snapshot> {
    let mut tx = shared
        .pool
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(map)?;
    let mut snapshot = Snapshot::default();

    let items: Vec<(String, i32, Vec<u8>)> = sqlx::query_as(
        &shared
            .sql("SELECT queue, priority, item FROM {s}.queue_items ORDER BY queue, priority, id"),
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(map)?;
    for (queue, priority, item) in items {
        let priority = u16::try_from(priority).map_err(|_| {
            Error::backend(
                BACKEND,
                format!("queue {queue:?} holds an item of priority {priority}"),
            )
        })?;
        snapshot
            .queues
            .entry(name(queue)?)
            .or_default()
            .push(QueueItem {
                priority,
                item: Bytes::from(item),
            });
    }

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

    let holds: Vec<(String, String, i64)> = sqlx::query_as(&shared.sql(
        "SELECT DISTINCT n.kind, n.name, substr(a.application_name, length({s}.tag_prefix()) + 1)::bigint \
         FROM pg_locks l \
         JOIN pg_stat_activity a ON a.pid = l.pid \
         JOIN {s}.lock_names n ON l.objid = n.id::oid \
         WHERE l.locktype = 'advisory' AND l.objsubid = 2 \
           AND l.classid = '{s}'::regnamespace::oid \
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND a.application_name LIKE {s}.tag_prefix() || '%' \
           AND substr(a.application_name, length({s}.tag_prefix()) + 1) ~ '^[0-9]{1,19}$' \
         UNION \
         SELECT n.kind, n.name, g.session_id \
         FROM {s}.lock_grants g \
         JOIN {s}.lock_names n ON n.id = g.name_id \
         JOIN {s}.sessions x ON x.id = g.session_id \
         WHERE x.expires_at > clock_timestamp() \
         UNION \
         SELECT 'double_barrier', e.name, e.session_id \
         FROM {s}.double_barrier_entries e JOIN {s}.sessions x ON x.id = e.session_id \
         WHERE x.expires_at > clock_timestamp() \
         ORDER BY 1, 2, 3",
    ))
    .fetch_all(&mut *tx)
    .await
    .map_err(map)?;
    snapshot.active_holds = holds
        .into_iter()
        .map(|(kind, name, session)| format!("{}/{kind}/{name}/{session:x}", shared.schema))
        .collect();
    // Semaphore entries of live sessions (holders and waiters), keyed as their permits.
    let entries: Vec<(String, i64, i64)> = sqlx::query_as(&shared.sql(
        "SELECT n.name, e.session_id, e.entry \
         FROM {s}.semaphore_entries e \
         JOIN {s}.lock_names n ON n.id = e.name_id \
         JOIN {s}.sessions x ON x.id = e.session_id \
         WHERE NOT e.cancelled AND x.expires_at > clock_timestamp() \
         ORDER BY 1, 2, 3",
    ))
    .fetch_all(&mut *tx)
    .await
    .map_err(map)?;
    snapshot
        .active_holds
        .extend(entries.into_iter().map(|(name, session, entry)| {
            format!("{}/semaphore/{name}/{session:x}/{entry}", shared.schema)
        }));

    tx.commit().await.map_err(map)?;
    Ok(snapshot)
}
