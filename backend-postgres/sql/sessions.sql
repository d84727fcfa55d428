-- The sessions: one heartbeat row each (a random id, its TTL, `expires_at`), renewed in
-- batches (see crate::session); everything a session holds or waits for is a row tied to
-- this one, deleted with it. Changes are announced on the channel
-- `distsync_<schema oid>` (see crate::schema).
CREATE TABLE IF NOT EXISTS {s}.sessions (
    id         bigserial PRIMARY KEY,
    ttl_ms     bigint NOT NULL,
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE OR REPLACE FUNCTION {s}.notify(payload text) RETURNS void LANGUAGE sql AS $$
    SELECT pg_notify('distsync_' || ('{s}'::regnamespace::oid)::text, payload)
$$;

-- Ends sessions at once: deletes their rows, cascading to their entries (holds, waits,
-- permits), leader rows and double-barrier entries, which wakes the waiters they let
-- in, and tells their owners (NOTIFY s:<id>, delivered at commit). Returns how many
-- rows it deleted.
CREATE OR REPLACE FUNCTION {s}.end_sessions(ids bigint[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    ended integer;
BEGIN
    WITH gone AS (DELETE FROM {s}.sessions WHERE id = ANY (ids) RETURNING id)
    SELECT count(*) INTO ended FROM gone;
    PERFORM {s}.notify('s:' || i::text) FROM unnest(ids) AS i;
    RETURN ended;
END
$$;

-- The sessions of `ids` that are dead, settled under their row locks: those whose row is
-- gone (ended), and those whose row has expired, each locked on its newest version and
-- rewritten unchanged. What a grant may pass over, and what a queue item's hold no
-- longer protects. An expiry read from a statement's snapshot can be stale: a renewal
-- that checked the row before its expiry and commits after the snapshot is invisible to
-- it, while the clock moves past the old expiry, so the holder would keep a renewed
-- session while what it holds is given to another. Locking instead reads the newest
-- version (READ COMMITTED re-checks a row committed after the snapshot against its
-- newest version), and skips a row being written (a renewal in flight, an end): such a
-- session counts as live, the safe side. The rewrite makes a renewal waiting for the row
-- re-check it once this transaction ends and find it expired, so the holder learns of
-- the loss: a renewal that succeeds and a judgement that its session is dead never both
-- happen. Every other session of `ids` counts as live, even one that expires later in
-- the transaction. Never waits for a row lock.
-- PL/pgSQL, not SQL, with a generic plan: the body of a SQL function that cannot be
-- inlined (this one writes) is planned again at every call, and a grant over a line
-- calls this once per grant, so that planning was the largest part of a contended grant's
-- server time; PL/pgSQL keeps the plan for the connection's life, and the generic plan
-- is the custom one (the index on `id` whatever `ids` holds) without re-planning.
CREATE OR REPLACE FUNCTION {s}.fence_expired(ids bigint[]) RETURNS bigint[]
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    dead bigint[];
BEGIN
    WITH expired AS (
        SELECT x.id FROM {s}.sessions x
         WHERE x.id = ANY (ids) AND x.expires_at <= clock_timestamp()
         ORDER BY x.id
           FOR NO KEY UPDATE OF x SKIP LOCKED
    ), fenced AS (
        UPDATE {s}.sessions x SET expires_at = x.expires_at
          FROM expired WHERE x.id = expired.id
        RETURNING x.id
    )
    SELECT coalesce(array_agg(id), '{}') INTO dead
      FROM (SELECT id FROM fenced
            UNION ALL
            SELECT i FROM unnest(ids) AS i
             WHERE NOT EXISTS (SELECT 1 FROM {s}.sessions x WHERE x.id = i)) AS gone;
    RETURN dead;
END
$$;

-- Ends those of `ids` whose heartbeat is older than their TTL (or whose row is gone).
-- The expired rows are locked on their newest version before they are ended: an expiry
-- read from the statement's snapshot misses a renewal that checked the row before its
-- expiry and commits after the snapshot, and the delete would then end a session its
-- holder has just renewed. A row being written (a renewal in flight) is skipped, left
-- to a later sweep; no row lock is waited for.
CREATE OR REPLACE FUNCTION {s}.reap_sessions(ids bigint[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    dead bigint[];
BEGIN
    SELECT coalesce(array_agg(i), '{}') INTO dead
      FROM unnest(ids) AS i
     WHERE NOT EXISTS (SELECT 1 FROM {s}.sessions x WHERE x.id = i);
    SELECT dead || coalesce(array_agg(x.id), '{}') INTO dead
      FROM (SELECT id FROM {s}.sessions
             WHERE id = ANY (ids) AND expires_at <= clock_timestamp()
             ORDER BY id
               FOR UPDATE SKIP LOCKED) AS x;
    IF cardinality(dead) = 0 THEN
        RETURN 0;
    END IF;
    RAISE LOG 'distsync: ending expired sessions %', dead;
    PERFORM {s}.end_sessions(dead);
    RETURN cardinality(dead);
END
$$;

-- Renews the sessions `ids` that have not expired (one statement for every session of a
-- process, see crate::connection::heartbeat); returns those renewed.
CREATE OR REPLACE FUNCTION {s}.renew_sessions(ids bigint[]) RETURNS SETOF bigint
LANGUAGE sql AS $$
    UPDATE {s}.sessions SET expires_at = clock_timestamp() + ttl_ms * interval '1 millisecond'
     WHERE id = ANY (ids) AND expires_at > clock_timestamp()
    RETURNING id
$$;
