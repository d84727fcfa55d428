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

-- Until version 8, holds were advisory locks recorded in lock_grants; since version 9
-- they are entries in the line of semaphore_entries (see crate::waiter_line).
DROP TABLE IF EXISTS {s}.lock_grants;

-- Since version 9: names are pruned when unused (see prune_names); a name registered
-- again starts its fencing counter at the highest counter ever pruned, so that no
-- name's tokens go backwards.
ALTER TABLE {s}.lock_names ADD COLUMN IF NOT EXISTS used_at timestamptz NOT NULL
    DEFAULT clock_timestamp();
CREATE INDEX IF NOT EXISTS lock_names_used_at ON {s}.lock_names (used_at);
CREATE TABLE IF NOT EXISTS {s}.token_floor (
    floor bigint NOT NULL
);
INSERT INTO {s}.token_floor (floor) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM {s}.token_floor);
CREATE INDEX IF NOT EXISTS election_log_at ON {s}.election_log (at);

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

-- The queue's trigger (queue_items_notify: an insert wakes one waiting consumer) and
-- the rest of its objects are defined in crate::queue (since version 11).

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

DROP FUNCTION IF EXISTS {s}.end_sessions(bigint[]);
DROP FUNCTION IF EXISTS {s}.terminate_sessions(bigint[]);
DROP FUNCTION IF EXISTS {s}.reap_key(integer, integer, bigint);
DROP FUNCTION IF EXISTS {s}.check_session(bigint, integer, integer, boolean);
DROP FUNCTION IF EXISTS {s}.lock_grant(integer, integer, boolean, boolean, bigint, boolean);
DROP FUNCTION IF EXISTS {s}.campaign_grant(integer, integer, text, bigint, bytea, boolean, boolean);
DROP FUNCTION IF EXISTS {s}.grant_gate(integer, integer, boolean, bigint);
DROP FUNCTION IF EXISTS {s}.advisory_unlock(integer, integer, boolean);
DROP FUNCTION IF EXISTS {s}.advisory_lock(integer, integer, boolean, boolean);
DROP FUNCTION IF EXISTS {s}.lock_release(integer, integer, boolean);
DROP FUNCTION IF EXISTS {s}.release_all();
DROP FUNCTION IF EXISTS {s}.abandon(bigint, integer);
DROP FUNCTION IF EXISTS {s}.proclaim(text, bigint, bigint, bytea);

-- Ends sessions at once: deletes their rows, cascading to their entries (holds, waits,
-- permits), leader rows and double-barrier entries, which wakes the waiters they let
-- in, and tells their owners (NOTIFY s:<id>, delivered at commit). Returns how many
-- rows it deleted.
CREATE FUNCTION {s}.end_sessions(ids bigint[]) RETURNS integer
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

-- Renews the sessions `ids` that have not expired (one statement for every session of a
-- process, see crate::connection::heartbeat); returns those renewed.
CREATE OR REPLACE FUNCTION {s}.renew_sessions(ids bigint[]) RETURNS SETOF bigint
LANGUAGE sql AS $$
    UPDATE {s}.sessions SET expires_at = clock_timestamp() + ttl_ms * interval '1 millisecond'
     WHERE id = ANY (ids) AND expires_at > clock_timestamp()
    RETURNING id
$$;

-- The id of name (p_kind, p_name), registered if new, with its fencing counter starting
-- at the token floor (the highest counter of a pruned name). Taking the floor row FOR
-- SHARE waits for a prune in progress, so a name pruned and registered again never
-- starts below the counter it had.
CREATE OR REPLACE FUNCTION {s}.register_name(p_kind text, p_name text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    r integer;
    f bigint;
BEGIN
    LOOP
        SELECT id INTO r FROM {s}.lock_names WHERE kind = p_kind AND name = p_name;
        IF FOUND THEN
            RETURN r;
        END IF;
        SELECT floor INTO f FROM {s}.token_floor FOR SHARE;
        INSERT INTO {s}.lock_names (kind, name, token) VALUES (p_kind, p_name, coalesce(f, 0))
        ON CONFLICT (kind, name) DO NOTHING RETURNING id INTO r;
        IF FOUND THEN
            RETURN r;
        END IF;
    END LOOP;
END
$$;

-- Deletes up to p_limit names unused for p_idle seconds that have no entry in line (and
-- their semaphore rows), raising the token floor to their highest counter first. A name
-- locked by a grant in progress is skipped; a waiter whose name went meanwhile finds no
-- counter row (DS002) and registers it again. Returns how many went.
CREATE OR REPLACE FUNCTION {s}.prune_names(p_idle double precision, p_limit integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    top bigint;
    gone integer;
BEGIN
    PERFORM 1 FROM {s}.token_floor FOR UPDATE;
    WITH victims AS (
        SELECT n.id FROM {s}.lock_names n
         WHERE n.used_at < clock_timestamp() - p_idle * interval '1 second'
           AND NOT EXISTS (SELECT 1 FROM {s}.semaphore_entries e WHERE e.name_id = n.id)
         ORDER BY n.used_at
         LIMIT p_limit
           FOR UPDATE OF n SKIP LOCKED
    ), sem AS (
        DELETE FROM {s}.semaphores m USING victims v WHERE m.name_id = v.id
    ), del AS (
        DELETE FROM {s}.lock_names n USING victims v WHERE n.id = v.id RETURNING n.token
    )
    SELECT max(token), count(*) INTO top, gone FROM del;
    UPDATE {s}.token_floor SET floor = greatest(floor, coalesce(top, 0));
    RETURN gone;
END
$$;

-- Deletes up to p_limit election log entries older than p_age seconds.
CREATE OR REPLACE FUNCTION {s}.prune_election_log(p_age double precision, p_limit integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    gone integer;
BEGIN
    WITH old AS (
        SELECT election, term, version FROM {s}.election_log
         WHERE at < clock_timestamp() - p_age * interval '1 second'
         ORDER BY at LIMIT p_limit
    ), del AS (
        DELETE FROM {s}.election_log l USING old o
         WHERE (l.election, l.term, l.version) = (o.election, o.term, o.version)
        RETURNING 1
    )
    SELECT count(*) INTO gone FROM del;
    RETURN gone;
END
$$;

-- Keeps the last p_keep entries of election p_election's log.
CREATE OR REPLACE FUNCTION {s}.trim_election_log(p_election text, p_keep integer)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    t bigint;
    v bigint;
BEGIN
    SELECT term, version INTO t, v FROM {s}.election_log WHERE election = p_election
     ORDER BY term DESC, version DESC OFFSET greatest(p_keep, 1) LIMIT 1;
    IF t IS NOT NULL THEN
        DELETE FROM {s}.election_log WHERE election = p_election AND (term, version) <= (t, v);
    END IF;
END
$$;

-- A candidacy granted (see semaphore_check): starts term p_term of p_election with
-- p_session as the leader, logs it, and trims the log to p_keep entries.
CREATE OR REPLACE FUNCTION {s}.campaign_won(p_election text, p_session bigint, p_term bigint,
                                            p_value bytea, p_keep integer) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {s}.election_leaders (election, session_id, term, version, value)
         VALUES (p_election, p_session, p_term, 1, p_value)
    ON CONFLICT (election) DO UPDATE
            SET session_id = EXCLUDED.session_id, term = EXCLUDED.term,
                version = 1, value = EXCLUDED.value;
    INSERT INTO {s}.election_log (election, term, version, session_id, value)
         VALUES (p_election, p_term, 1, p_session, p_value);
    PERFORM {s}.trim_election_log(p_election, p_keep);
END
$$;

DROP FUNCTION IF EXISTS {s}.campaign_resign(integer, text, bigint, bigint, bigint);

-- Replaces the leader's value if (p_session, p_term) still leads and its session has not
-- expired; false otherwise. Every 16 versions the log is trimmed to p_keep entries, so a
-- long-lived leader that proclaims often keeps it bounded.
CREATE OR REPLACE FUNCTION {s}.proclaim(p_election text, p_session bigint, p_term bigint,
                                        p_value bytea, p_keep integer) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v bigint;
BEGIN
    UPDATE {s}.election_leaders l SET version = version + 1, value = p_value
     WHERE l.election = p_election AND l.session_id = p_session AND l.term = p_term
       AND EXISTS (SELECT 1 FROM {s}.sessions x
                    WHERE x.id = p_session AND x.expires_at > clock_timestamp())
    RETURNING version INTO v;
    IF v IS NULL THEN
        RETURN false;
    END IF;
    INSERT INTO {s}.election_log (election, term, version, session_id, value)
         VALUES (p_election, p_term, v, p_session, p_value);
    IF v % 16 = 0 THEN
        PERFORM {s}.trim_election_log(p_election, p_keep);
    END IF;
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
