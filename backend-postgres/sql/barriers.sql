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
    participant bigint NOT NULL,
    PRIMARY KEY (name, session_id, participant)
);
CREATE INDEX IF NOT EXISTS double_barrier_entries_session
    ON {s}.double_barrier_entries (session_id);

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
-- of them expires. Ends the sessions of expired entries on the way (reap_sessions, which
-- judges their expiry under their row locks); every entry left counts as live, since an
-- expiry read from a snapshot can miss a renewal committed after it.
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
     WHERE e.name = p_name AND (e.session_id, e.participant) <> (p_session, p_part);
END
$$;
