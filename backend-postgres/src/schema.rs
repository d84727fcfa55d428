//! The tables and functions of the backend, created on first use in the configured schema.
//!
//! Creation is idempotent (`CREATE ... IF NOT EXISTS`, `CREATE OR REPLACE`) and runs in
//! one transaction holding a transaction-level advisory lock, so concurrent first users
//! take turns; a version row lets later connections skip it. Nothing needs a superuser:
//! the role needs `CREATE` on the database (or an existing schema it owns), and
//! `plpgsql`, which every PostgreSQL has. PostgreSQL 14 or later is required
//! (`CREATE OR REPLACE TRIGGER`, `pg_terminate_backend(pid, timeout)`,
//! `client_connection_check_interval`).
//!
//! # Layout
//! - `sessions`: one heartbeat row per session (id, backend pid, TTL, `expires_at`).
//!   Every dedicated connection of session `N` carries the `application_name`
//!   `distsync/<schema oid>/<N>`, which ties a backend (and the advisory locks it holds)
//!   to its session.
//! - `lock_names`: the name table of locks, read-write locks and elections. Its `id` is
//!   the second key of the two-key advisory locks (the first is the schema's OID), so
//!   two names never share a lock; `token` is the fencing counter.
//! - `election_leaders` (the current leader, tied to its session) and `election_log`
//!   (every win and proclaim, for `observe`; pruned after ten minutes).
//! - `queue_items`, `barriers`, `double_barriers` / `double_barrier_entries`, `kv` (STM).
//! - `semaphores` and `semaphore_entries`, with their functions, defined in
//!   [`crate::semaphore`] and created here after the rest.
//!
//! Changes are announced with `NOTIFY` on the channel `distsync_<schema oid>` (payload
//! `<kind>:<name>`: `q` queue, `b` barrier, `d` double barrier, `e` election; `s:<id>`
//! when a session is ended; `m:<session>.<entry>` when a semaphore waiter may be
//! granted, `M:<name id>` when all of a semaphore's waiters must re-check), by
//! triggers and functions, so they are delivered at commit.

use sqlx::postgres::types::Oid;
use sqlx::postgres::PgConnection;
use sqlx::{Executor, PgPool};

use crate::error::map;
use distsync_core::Result;

/// Bumped whenever the DDL below changes.
const SCHEMA_VERSION: i32 = 8;

/// The DDL; `{s}` stands for the quoted schema name.
const DDL: &str = r#"
CREATE SCHEMA IF NOT EXISTS {s};

CREATE TABLE IF NOT EXISTS {s}.meta (
    version integer NOT NULL
);

CREATE TABLE IF NOT EXISTS {s}.sessions (
    id         bigserial PRIMARY KEY,
    pid        integer,
    ttl_ms     bigint NOT NULL,
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE IF NOT EXISTS {s}.lock_names (
    id    serial PRIMARY KEY,
    kind  text NOT NULL,
    name  text NOT NULL,
    token bigint NOT NULL DEFAULT 0,
    UNIQUE (kind, name)
);

CREATE TABLE IF NOT EXISTS {s}.election_leaders (
    election   text PRIMARY KEY,
    session_id bigint NOT NULL REFERENCES {s}.sessions (id) ON DELETE CASCADE,
    term       bigint NOT NULL,
    version    bigint NOT NULL,
    value      bytea NOT NULL
);
CREATE INDEX IF NOT EXISTS election_leaders_session ON {s}.election_leaders (session_id);

CREATE TABLE IF NOT EXISTS {s}.election_log (
    election   text NOT NULL,
    term       bigint NOT NULL,
    version    bigint NOT NULL,
    session_id bigint NOT NULL,
    value      bytea NOT NULL,
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (election, term, version)
);

CREATE TABLE IF NOT EXISTS {s}.queue_items (
    id       bigserial PRIMARY KEY,
    queue    text NOT NULL,
    priority integer NOT NULL,
    item     bytea NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_items_order ON {s}.queue_items (queue, priority, id);

-- Since version 7: claims in flight, named by the consumer's call id, so that a retry
-- after a lost reply finds the item its first attempt took (see queue.rs).
CREATE TABLE IF NOT EXISTS {s}.queue_inflight (
    call       text PRIMARY KEY,
    id         bigint NOT NULL,
    queue      text NOT NULL,
    priority   integer NOT NULL,
    item       bytea NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE IF NOT EXISTS {s}.barriers (
    name text PRIMARY KEY
);

CREATE TABLE IF NOT EXISTS {s}.double_barriers (
    name  text PRIMARY KEY,
    ready boolean NOT NULL DEFAULT false
);

CREATE TABLE IF NOT EXISTS {s}.double_barrier_entries (
    name       text NOT NULL,
    session_id bigint NOT NULL REFERENCES {s}.sessions (id) ON DELETE CASCADE,
    PRIMARY KEY (name, session_id)
);
CREATE INDEX IF NOT EXISTS double_barrier_entries_session
    ON {s}.double_barrier_entries (session_id);
-- Since version 4: one entry per participant (a handle), not per session.
ALTER TABLE {s}.double_barrier_entries ADD COLUMN IF NOT EXISTS participant bigint NOT NULL DEFAULT 0;
ALTER TABLE {s}.double_barrier_entries DROP CONSTRAINT IF EXISTS double_barrier_entries_pkey;
ALTER TABLE {s}.double_barrier_entries ADD PRIMARY KEY (name, session_id, participant);

-- The grants of advisory locks: one row per hold (name, holding backend), deleted by a
-- clean release. A row whose backend is gone is a hold freed without a release (the
-- connection closed): the next grant of the name waits until its session has expired.
CREATE TABLE IF NOT EXISTS {s}.lock_grants (
    name_id    integer NOT NULL,
    pid        integer NOT NULL,
    session_id bigint NOT NULL REFERENCES {s}.sessions (id) ON DELETE CASCADE,
    exclusive  boolean NOT NULL,
    PRIMARY KEY (name_id, pid)
);
CREATE INDEX IF NOT EXISTS lock_grants_session ON {s}.lock_grants (session_id);
CREATE INDEX IF NOT EXISTS lock_grants_pid ON {s}.lock_grants (pid);

CREATE TABLE IF NOT EXISTS {s}.kv (
    key   text PRIMARY KEY,
    value bytea NOT NULL
);

-- 'distsync/<schema oid>/': the application_name prefix of session connections.
CREATE OR REPLACE FUNCTION {s}.tag_prefix() RETURNS text LANGUAGE sql STABLE AS $$
    SELECT 'distsync/' || ('{s}'::regnamespace::oid)::text || '/'
$$;

CREATE OR REPLACE FUNCTION {s}.notify(payload text) RETURNS void LANGUAGE sql AS $$
    SELECT pg_notify('distsync_' || ('{s}'::regnamespace::oid)::text, payload)
$$;

CREATE OR REPLACE FUNCTION {s}.notify_queue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM {s}.notify('q:' || NEW.queue);
    RETURN NULL;
END
$$;
CREATE OR REPLACE TRIGGER queue_items_notify AFTER INSERT ON {s}.queue_items
    FOR EACH ROW EXECUTE FUNCTION {s}.notify_queue();

CREATE OR REPLACE FUNCTION {s}.notify_barrier() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM {s}.notify('b:' || OLD.name);
    RETURN NULL;
END
$$;
CREATE OR REPLACE TRIGGER barriers_notify AFTER DELETE ON {s}.barriers
    FOR EACH ROW EXECUTE FUNCTION {s}.notify_barrier();

CREATE OR REPLACE FUNCTION {s}.notify_double_barrier() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM {s}.notify('d:' || OLD.name);
    ELSE
        PERFORM {s}.notify('d:' || NEW.name);
    END IF;
    RETURN NULL;
END
$$;
CREATE OR REPLACE TRIGGER double_barriers_notify AFTER INSERT OR UPDATE ON {s}.double_barriers
    FOR EACH ROW EXECUTE FUNCTION {s}.notify_double_barrier();
CREATE OR REPLACE TRIGGER double_barrier_entries_notify
    AFTER INSERT OR DELETE ON {s}.double_barrier_entries
    FOR EACH ROW EXECUTE FUNCTION {s}.notify_double_barrier();

CREATE OR REPLACE FUNCTION {s}.notify_election() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM {s}.notify('e:' || OLD.election);
    ELSE
        PERFORM {s}.notify('e:' || NEW.election);
    END IF;
    RETURN NULL;
END
$$;
CREATE OR REPLACE TRIGGER election_leaders_notify
    AFTER INSERT OR UPDATE OR DELETE ON {s}.election_leaders
    FOR EACH ROW EXECUTE FUNCTION {s}.notify_election();

-- Ends sessions at once: deletes their rows (cascading to their leader rows and
-- double-barrier entries) and terminates their backends, which releases their advisory
-- locks. Waits (up to 5 s) until those backends have exited, so that their locks are
-- free when it returns.
CREATE OR REPLACE FUNCTION {s}.end_sessions(ids bigint[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    tags text[];
    ended integer;
BEGIN
    DELETE FROM {s}.sessions WHERE id = ANY (ids);
    -- Tells the sessions' owners at once (delivered at commit).
    PERFORM {s}.notify('s:' || i::text) FROM unnest(ids) AS i;
    SELECT coalesce(array_agg({s}.tag_prefix() || i::text), '{}') INTO tags FROM unnest(ids) AS i;
    SELECT count(*) INTO ended FROM (
        SELECT pg_terminate_backend(a.pid)
          FROM pg_stat_activity a
         WHERE a.pid <> pg_backend_pid() AND a.application_name = ANY (tags)
    ) AS t;
    FOR attempt IN 1..500 LOOP
        -- pg_stat_activity is a snapshot per transaction unless cleared.
        PERFORM pg_stat_clear_snapshot();
        EXIT WHEN NOT EXISTS (SELECT 1 FROM pg_stat_activity a
                               WHERE a.pid <> pg_backend_pid()
                                 AND a.application_name = ANY (tags));
        PERFORM pg_sleep(0.01);
    END LOOP;
    RETURN ended;
END
$$;

-- Ends the connections of sessions whose owner has declared them lost, keeping their
-- rows: they expire at their `expires_at`, and until then the holds their connections
-- had are not granted to anyone else (see lock_grant), nor are their double-barrier
-- entries and leader rows forgotten.
CREATE OR REPLACE FUNCTION {s}.terminate_sessions(ids bigint[]) RETURNS integer
LANGUAGE sql AS $$
    SELECT count(pg_terminate_backend(a.pid))::integer
      FROM pg_stat_activity a
     WHERE a.pid <> pg_backend_pid()
       AND a.application_name = ANY (ARRAY(SELECT {s}.tag_prefix() || i::text FROM unnest(ids) AS i))
$$;

-- Ends those of `ids` whose heartbeat is older than their TTL (or whose row is gone).
CREATE OR REPLACE FUNCTION {s}.reap_sessions(ids bigint[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    dead bigint[];
BEGIN
    SELECT coalesce(array_agg(i), '{}') INTO dead
      FROM unnest(ids) AS i
     WHERE NOT EXISTS (SELECT 1 FROM {s}.sessions x
                        WHERE x.id = i AND x.expires_at > clock_timestamp());
    IF cardinality(dead) = 0 THEN
        RETURN 0;
    END IF;
    RAISE LOG 'distsync: ending expired sessions %', dead;
    PERFORM {s}.end_sessions(dead);
    RETURN cardinality(dead);
END
$$;

-- Enforces the TTL on one advisory lock key: ends every session, other than `own`, that
-- holds or waits for (k1, k2) and has expired. Returns how many were ended and the
-- seconds until the next expiry of a live one (NULL if none).
CREATE OR REPLACE FUNCTION {s}.reap_key(k1 integer, k2 integer, own bigint,
                                        OUT reaped integer, OUT next_expiry double precision)
LANGUAGE plpgsql AS $$
DECLARE
    prefix text := {s}.tag_prefix();
    sids bigint[];
BEGIN
    SELECT coalesce(array_agg(DISTINCT substr(a.application_name, length(prefix) + 1)::bigint),
                    '{}')
      INTO sids
      FROM pg_locks l
      JOIN pg_stat_activity a ON a.pid = l.pid
     WHERE l.locktype = 'advisory'
       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
       AND l.classid = k1::oid AND l.objid = k2::oid AND l.objsubid = 2
       AND a.application_name LIKE prefix || '%'
       AND substr(a.application_name, length(prefix) + 1) ~ '^[0-9]{1,19}$';
    sids := array_remove(sids, own);
    reaped := {s}.reap_sessions(sids);
    SELECT extract(epoch FROM min(x.expires_at) - clock_timestamp()) INTO next_expiry
      FROM {s}.sessions x
     WHERE x.id = ANY (sids) AND x.expires_at > clock_timestamp();
END
$$;

-- Raises DS001 (and releases (k1, k2)) unless session p_session is alive: a session
-- that has expired or been ended must not be granted anything.
CREATE OR REPLACE FUNCTION {s}.check_session(p_session bigint, k1 integer, k2 integer,
                                             exclusive boolean) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM {s}.sessions WHERE id = p_session AND expires_at > clock_timestamp();
    IF NOT FOUND THEN
        IF exclusive THEN
            PERFORM pg_advisory_unlock(k1, k2);
        ELSE
            PERFORM pg_advisory_unlock_shared(k1, k2);
        END IF;
        RAISE EXCEPTION 'distsync session % has ended', p_session USING ERRCODE = 'DS001';
    END IF;
END
$$;

DROP FUNCTION IF EXISTS {s}.lock_grant(integer, integer, boolean, boolean, bigint);
DROP FUNCTION IF EXISTS {s}.campaign_grant(integer, integer, text, bigint, bytea, boolean);

-- Releases advisory lock (k1, k2) of this connection.
CREATE OR REPLACE FUNCTION {s}.advisory_unlock(k1 integer, k2 integer, exclusive boolean)
RETURNS boolean LANGUAGE sql AS $$
    SELECT CASE WHEN exclusive THEN pg_advisory_unlock(k1, k2)
                ELSE pg_advisory_unlock_shared(k1, k2) END
$$;

-- Takes advisory lock (k1, k2) on this connection, waiting or not; false for a failed try.
CREATE OR REPLACE FUNCTION {s}.advisory_lock(k1 integer, k2 integer, exclusive boolean,
                                             wait boolean) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF exclusive THEN
        IF wait THEN
            PERFORM pg_advisory_lock(k1, k2);
            RETURN true;
        END IF;
        RETURN pg_try_advisory_lock(k1, k2);
    END IF;
    IF wait THEN
        PERFORM pg_advisory_lock_shared(k1, k2);
        RETURN true;
    END IF;
    RETURN pg_try_advisory_lock_shared(k1, k2);
END
$$;

-- The lease gate, run once this connection has advisory lock (k1, k2). The grant rows
-- of the name that conflict with this grant (all of them for an exclusive grant, the
-- exclusive ones for a shared grant) belong to holds whose connection is gone without a
-- release (a clean release deletes its row). Their holders may still believe they hold
-- until their session expires, so: if one of their sessions has not expired, returns
-- the seconds until the last of them does (the caller keeps the advisory lock and asks
-- again then). Otherwise deletes them, records this grant, and returns NULL.
-- Raises DS002 (and releases the advisory lock) when the name has no counter row.
DROP FUNCTION IF EXISTS {s}.grant_gate(integer, integer, boolean, bigint);
CREATE FUNCTION {s}.grant_gate(k1 integer, k2 integer, p_exclusive boolean,
                                          p_session bigint) RETURNS double precision
LANGUAGE plpgsql AS $$
DECLARE
    bound timestamptz;
BEGIN
    PERFORM 1 FROM {s}.lock_names WHERE id = k2 FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM {s}.advisory_unlock(k1, k2, p_exclusive);
        RAISE EXCEPTION 'distsync lock name % has no counter row', k2 USING ERRCODE = 'DS002';
    END IF;
    -- FOR UPDATE waits for a release (or session end) in progress, then skips its row.
    WITH stale AS (
        SELECT g.session_id FROM {s}.lock_grants g
         WHERE g.name_id = k2 AND (p_exclusive OR g.exclusive)
           FOR UPDATE
    )
    SELECT max(x.expires_at) INTO bound
      FROM stale JOIN {s}.sessions x ON x.id = stale.session_id;
    IF bound > clock_timestamp() THEN
        RETURN greatest(extract(epoch FROM bound - clock_timestamp()), 0.001);
    END IF;
    DELETE FROM {s}.lock_grants g WHERE g.name_id = k2 AND (p_exclusive OR g.exclusive);
    INSERT INTO {s}.lock_grants (name_id, pid, session_id, exclusive)
         VALUES (k2, pg_backend_pid(), p_session, p_exclusive)
    ON CONFLICT (name_id, pid) DO UPDATE
            SET session_id = EXCLUDED.session_id, exclusive = EXCLUDED.exclusive;
    RETURN NULL;
END
$$;

-- Takes advisory lock (k1, k2) on this connection for session p_session, exclusive or
-- shared, waiting or not (with `relock` false, the connection already has it: a second
-- pass through the gate). Outcomes:
-- o_token set: granted; an exclusive grant bumps and returns the name's fencing counter,
--   a shared one returns 0;
-- o_wait set: the lease gate holds the grant back for o_wait seconds; the connection
--   keeps the advisory lock (only when waiting);
-- both NULL: a failed try (the lock is taken, or held back by the gate).
CREATE OR REPLACE FUNCTION {s}.lock_grant(k1 integer, k2 integer, exclusive boolean,
                                          wait boolean, p_session bigint, relock boolean,
                                          OUT o_token bigint, OUT o_wait double precision)
LANGUAGE plpgsql AS $$
BEGIN
    IF relock AND NOT {s}.advisory_lock(k1, k2, exclusive, wait) THEN
        RETURN;
    END IF;
    PERFORM {s}.check_session(p_session, k1, k2, exclusive);
    o_wait := {s}.grant_gate(k1, k2, exclusive, p_session);
    IF o_wait IS NOT NULL THEN
        IF NOT wait THEN
            PERFORM {s}.advisory_unlock(k1, k2, exclusive);
            o_wait := NULL;
        END IF;
        RETURN;
    END IF;
    IF exclusive THEN
        UPDATE {s}.lock_names SET token = token + 1 WHERE id = k2 RETURNING token INTO o_token;
    ELSE
        o_token := 0;
    END IF;
END
$$;

-- As lock_grant (exclusive) for an election; a grant starts a term: bumps the fencing
-- counter and writes the leader row and a log entry. o_token is the term.
CREATE OR REPLACE FUNCTION {s}.campaign_grant(k1 integer, k2 integer, p_election text,
                                              p_session bigint, p_value bytea,
                                              wait boolean, relock boolean,
                                              OUT o_token bigint, OUT o_wait double precision)
LANGUAGE plpgsql AS $$
BEGIN
    SELECT g.o_token, g.o_wait INTO o_token, o_wait
      FROM {s}.lock_grant(k1, k2, true, wait, p_session, relock) AS g;
    IF o_token IS NULL THEN
        RETURN;
    END IF;
    INSERT INTO {s}.election_leaders (election, session_id, term, version, value)
         VALUES (p_election, p_session, o_token, 1, p_value)
    ON CONFLICT (election) DO UPDATE
            SET session_id = EXCLUDED.session_id, term = EXCLUDED.term,
                version = 1, value = EXCLUDED.value;
    INSERT INTO {s}.election_log (election, term, version, session_id, value)
         VALUES (p_election, o_token, 1, p_session, p_value);
    DELETE FROM {s}.election_log
     WHERE election = p_election AND at < clock_timestamp() - interval '10 minutes';
END
$$;

-- A clean release: deletes this connection's grant row of (k1, k2), then unlocks. A
-- waiter granted the advisory lock meanwhile waits for this transaction in the gate
-- and finds no row. False if this connection did not hold the lock.
-- Committed asynchronously: a release lost in a crash of the server leaves a grant row
-- that gates the next grant until its session expires, the safe side.
CREATE OR REPLACE FUNCTION {s}.lock_release(k1 integer, k2 integer, exclusive boolean)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    DELETE FROM {s}.lock_grants WHERE name_id = k2 AND pid = pg_backend_pid();
    RETURN {s}.advisory_unlock(k1, k2, exclusive);
END
$$;

-- Releases everything this connection holds (its owner dropped it).
CREATE OR REPLACE FUNCTION {s}.release_all() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM {s}.lock_grants WHERE pid = pg_backend_pid();
    PERFORM pg_advisory_unlock_all();
END
$$;

-- A grant abandoned by its client (the waiting call was dropped): nobody believes it
-- holds, so its row goes, and the backend is terminated (leaving the lock queue, or
-- releasing the lock granted meanwhile). Both in one transaction: a waiter granted the
-- lock by the termination waits for the row's deletion in the gate.
CREATE OR REPLACE FUNCTION {s}.abandon(p_session bigint, p_pid integer) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM {s}.lock_grants WHERE session_id = p_session AND pid = p_pid;
    PERFORM pg_terminate_backend(a.pid) FROM pg_stat_activity a
      WHERE a.pid = p_pid AND a.application_name = {s}.tag_prefix() || p_session::text;
END
$$;

-- Replaces the leader's value if (p_session, p_term) still leads; false otherwise.
CREATE OR REPLACE FUNCTION {s}.proclaim(p_election text, p_session bigint, p_term bigint,
                                        p_value bytea) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v bigint;
BEGIN
    UPDATE {s}.election_leaders SET version = version + 1, value = p_value
     WHERE election = p_election AND session_id = p_session AND term = p_term
    RETURNING version INTO v;
    IF v IS NULL THEN
        RETURN false;
    END IF;
    INSERT INTO {s}.election_log (election, term, version, session_id, value)
         VALUES (p_election, p_term, v, p_session, p_value);
    RETURN true;
END
$$;

DROP FUNCTION IF EXISTS {s}.dbarrier_enter(text, bigint, integer);
DROP FUNCTION IF EXISTS {s}.dbarrier_leave(text, bigint);
DROP FUNCTION IF EXISTS {s}.dbarrier_state(text, bigint);

-- Enters double barrier p_name for p_count participants, as participant p_part of
-- session p_session. Returns -1 when the barrier is full (nothing entered), 1 when the
-- count is reached (or the barrier is already open), 0 when the caller must wait.
CREATE OR REPLACE FUNCTION {s}.dbarrier_enter(p_name text, p_session bigint, p_part bigint,
                                              p_count integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    is_ready boolean;
    others integer;
BEGIN
    INSERT INTO {s}.double_barriers (name) VALUES (p_name) ON CONFLICT (name) DO NOTHING;
    SELECT ready INTO is_ready FROM {s}.double_barriers WHERE name = p_name FOR UPDATE;
    SELECT count(*) INTO others
      FROM {s}.double_barrier_entries e
      JOIN {s}.sessions x ON x.id = e.session_id
     WHERE e.name = p_name AND (e.session_id, e.participant) <> (p_session, p_part)
       AND x.expires_at > clock_timestamp();
    IF is_ready AND others = 0 THEN
        UPDATE {s}.double_barriers SET ready = false WHERE name = p_name;
        is_ready := false;
    END IF;
    IF others + 1 > p_count THEN
        RETURN -1;
    END IF;
    INSERT INTO {s}.double_barrier_entries (name, session_id, participant)
         VALUES (p_name, p_session, p_part)
    ON CONFLICT DO NOTHING;
    IF others + 1 = p_count AND NOT is_ready THEN
        UPDATE {s}.double_barriers SET ready = true WHERE name = p_name;
        is_ready := true;
    END IF;
    RETURN CASE WHEN is_ready THEN 1 ELSE 0 END;
END
$$;

-- Leaves double barrier p_name; closes it when nobody is left. Returns how many live
-- participants remain.
CREATE OR REPLACE FUNCTION {s}.dbarrier_leave(p_name text, p_session bigint, p_part bigint)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    live integer;
BEGIN
    PERFORM 1 FROM {s}.double_barriers WHERE name = p_name FOR UPDATE;
    DELETE FROM {s}.double_barrier_entries
     WHERE name = p_name AND session_id = p_session AND participant = p_part;
    SELECT count(*) INTO live
      FROM {s}.double_barrier_entries e
      JOIN {s}.sessions x ON x.id = e.session_id
     WHERE e.name = p_name AND x.expires_at > clock_timestamp();
    IF live = 0 THEN
        UPDATE {s}.double_barriers SET ready = false WHERE name = p_name AND ready;
    END IF;
    RETURN live;
END
$$;

-- The state of double barrier p_name as seen by participant p_part of p_session: whether
-- it is open, how many other live participants it has, and the seconds until the first
-- of them expires. Ends the sessions of expired entries on the way.
CREATE OR REPLACE FUNCTION {s}.dbarrier_state(p_name text, p_session bigint, p_part bigint,
                                              OUT ready boolean, OUT others integer,
                                              OUT next_expiry double precision)
LANGUAGE plpgsql AS $$
DECLARE
    dead bigint[];
BEGIN
    SELECT coalesce(array_agg(DISTINCT e.session_id), '{}') INTO dead
      FROM {s}.double_barrier_entries e
      JOIN {s}.sessions x ON x.id = e.session_id
     WHERE e.name = p_name AND x.expires_at <= clock_timestamp();
    IF cardinality(dead) > 0 THEN
        PERFORM {s}.reap_sessions(dead);
    END IF;
    SELECT coalesce((SELECT b.ready FROM {s}.double_barriers b WHERE b.name = p_name), false)
      INTO ready;
    SELECT count(*), extract(epoch FROM min(x.expires_at) - clock_timestamp())
      INTO others, next_expiry
      FROM {s}.double_barrier_entries e
      JOIN {s}.sessions x ON x.id = e.session_id
     WHERE e.name = p_name AND (e.session_id, e.participant) <> (p_session, p_part)
       AND x.expires_at > clock_timestamp();
END
$$;
"#;

/// Quotes a validated schema name as an SQL identifier.
pub(crate) fn quote(schema: &str) -> String {
    format!("\"{}\"", schema.replace('"', "\"\""))
}

/// `template` with `{s}` replaced by the quoted schema.
pub(crate) fn render(template: &str, quoted_schema: &str) -> String {
    template.replace("{s}", quoted_schema)
}

/// Creates the schema's objects unless they are already at [`SCHEMA_VERSION`], and
/// returns the schema's OID.
pub(crate) async fn ensure(pool: &PgPool, schema: &str) -> Result<u32> {
    let quoted = quote(schema);
    if current_version(pool, &quoted).await? != Some(SCHEMA_VERSION) {
        let ddl = render(DDL, &quoted);
        let clear = render("DELETE FROM {s}.meta", &quoted);
        let stamp = render("INSERT INTO {s}.meta (version) VALUES ($1)", &quoted);
        let mut tx = pool.begin().await.map_err(map)?;
        let conn: &mut PgConnection = &mut tx;
        // One creator at a time; the key is in the one-bigint space, which never meets the
        // two-int keys of locks.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('distsync schema setup', 0))")
            .execute(&mut *conn)
            .await
            .map_err(map)?;
        sqlx::query("SET LOCAL client_min_messages = warning")
            .execute(&mut *conn)
            .await
            .map_err(map)?;
        // No arguments: sent with the simple query protocol, which runs many statements.
        conn.execute(ddl.as_str()).await.map_err(map)?;
        // Since version 6 (8: the trigger takes the name's lock if free): the
        // semaphore's tables and functions (kept with its module).
        let semaphore = render(crate::semaphore::DDL, &quoted);
        conn.execute(semaphore.as_str()).await.map_err(map)?;
        sqlx::query(&clear).execute(&mut *conn).await.map_err(map)?;
        sqlx::query(&stamp)
            .bind(SCHEMA_VERSION)
            .execute(&mut *conn)
            .await
            .map_err(map)?;
        tx.commit().await.map_err(map)?;
        tracing::info!(schema, version = SCHEMA_VERSION, "distsync schema ready");
    }
    let oid: Oid = sqlx::query_scalar("SELECT oid FROM pg_namespace WHERE nspname = $1")
        .bind(schema)
        .fetch_one(pool)
        .await
        .map_err(map)?;
    Ok(oid.0)
}

async fn current_version(pool: &PgPool, quoted: &str) -> Result<Option<i32>> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(format!("{quoted}.meta"))
        .fetch_one(pool)
        .await
        .map_err(map)?;
    if !exists {
        return Ok(None);
    }
    sqlx::query_scalar(&render("SELECT max(version) FROM {s}.meta", quoted))
        .fetch_one(pool)
        .await
        .map_err(map)
}
