-- Unflushed grants (see crate::unflushed_grants): the crash sentinel and the gate every
-- grant of a client in that mode passes.

-- One row with a random id, in an UNLOGGED table: PostgreSQL empties unlogged tables
-- at crash recovery and on a promoted standby, and keeps them across a clean restart,
-- so a missing row says that grants committed without a flush may have been lost.
-- Made with its row when the table is made, so that a new schema grants at once; the
-- row is written again only by grant_sentinel, which starts a lock-delay first.
DO $$
BEGIN
    IF to_regclass('{s}.grant_sentinel') IS NULL THEN
        CREATE UNLOGGED TABLE {s}.grant_sentinel (
            one boolean PRIMARY KEY DEFAULT true CHECK (one),
            id  text NOT NULL
        );
        INSERT INTO {s}.grant_sentinel (id) VALUES (md5(random()::text || clock_timestamp()::text));
    END IF;
END
$$;

-- The sentinel's id; where the row is missing (the server crashed or was promoted since
-- it was written), first the epoch marker's hold_until is moved to at least p_bound_ms
-- (and the marker's longest TTL) from now, then a new row is written, and the
-- transaction commits synchronously: every grant made without a flush before the
-- crash belongs to a session whose holder learns the crash (its heartbeat reads the
-- sentinel) or reaches its deadline within that time, and nothing is granted in this
-- mode until then.
CREATE OR REPLACE FUNCTION {s}.grant_sentinel(p_bound_ms bigint) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    sid text;
BEGIN
    SELECT id INTO sid FROM {s}.grant_sentinel;
    IF sid IS NOT NULL THEN
        RETURN sid;
    END IF;
    INSERT INTO {s}.epoch_marker AS m (id, ttl_ms, token_offset, hold_until)
         VALUES (md5(random()::text || clock_timestamp()::text), p_bound_ms, 0,
                 clock_timestamp() + p_bound_ms * interval '1 millisecond')
    ON CONFLICT (one) DO UPDATE SET
        hold_until = greatest(m.hold_until,
                              clock_timestamp()
                              + greatest(m.ttl_ms, p_bound_ms) * interval '1 millisecond');
    INSERT INTO {s}.grant_sentinel (id) VALUES (md5(random()::text || clock_timestamp()::text))
    ON CONFLICT (one) DO NOTHING;
    PERFORM set_config('synchronous_commit', 'on', true);
    -- commit_async leaves a transaction that set this synchronous.
    PERFORM set_config('distsync.granted', 'on', true);
    SELECT id INTO sid FROM {s}.grant_sentinel;
    RETURN sid;
END
$$;

-- The gate of a grant, called by every grant path when the connection's setting
-- distsync.unflushed_grants (the bound on session TTLs, in milliseconds) is set: NULL
-- when the grant may go ahead, and its transaction then commits without waiting for
-- the flush (with p_async; the grants of a release, whose commit the release's caller
-- chose, pass false); otherwise the seconds until the store's lock-delay (the epoch marker's
-- hold_until) ends, after a crash found here (grant_sentinel) or by a client, and
-- nothing may be granted before then. Without the setting: NULL, and nothing changes.
CREATE OR REPLACE FUNCTION {s}.grant_gate(p_async boolean DEFAULT true)
RETURNS double precision
LANGUAGE plpgsql AS $$
DECLARE
    bound_ms bigint := nullif(current_setting('distsync.unflushed_grants', true), '')::bigint;
    held double precision;
BEGIN
    IF bound_ms IS NULL THEN
        RETURN NULL;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM {s}.grant_sentinel) THEN
        PERFORM {s}.grant_sentinel(bound_ms);
    END IF;
    SELECT extract(epoch FROM hold_until - clock_timestamp()) INTO held FROM {s}.epoch_marker;
    IF held > 0 THEN
        RETURN held;
    END IF;
    IF p_async THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    RETURN NULL;
END
$$;
