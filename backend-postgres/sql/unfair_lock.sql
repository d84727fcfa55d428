-- The unfair lock (see crate::unfair_lock). Its holder is the fair lock's (the solo
-- holder in the name's row, or an exclusive entry of the name's line), so the two exclude
-- each other and share the name's fencing counter. Its waiters wait apart, one row each in
-- `unfair_waiters` (in order of registration, `ord`), and leave a solo holder where it
-- is; only the first live one, the head, is woken when the lock comes free, and it asks
-- again, as a newcomer would.
CREATE TABLE IF NOT EXISTS {s}.unfair_waiters (
    ord        bigserial PRIMARY KEY,
    name_id    integer NOT NULL,
    session_id bigint NOT NULL REFERENCES {s}.sessions (id) ON DELETE CASCADE,
    entry      bigint NOT NULL,
    UNIQUE (session_id, entry)
);
CREATE INDEX IF NOT EXISTS unfair_waiters_line ON {s}.unfair_waiters (name_id, ord);

-- Wakes the head of the unfair waiters of name k (the live waiter registered first:
-- 'm:<session>.<entry>', no token, so it asks again). The caller knows the lock is free:
-- a solo holder's release (the name's line is empty while a solo holder holds), or
-- unfair_wake. Returns true, so that a release statement can call it in a condition.
CREATE OR REPLACE FUNCTION {s}.unfair_wake_head(k integer) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM {s}.notify('m:' || w.session_id::text || '.' || w.entry::text)
       FROM (SELECT u.session_id, u.entry
               FROM {s}.unfair_waiters u
               JOIN {s}.sessions x ON x.id = u.session_id
              WHERE u.name_id = k AND x.expires_at > clock_timestamp()
              ORDER BY u.ord
              LIMIT 1) AS w;
    RETURN true;
END
$$;

-- Wakes the head of the unfair waiters of name k if nobody holds the lock or waits in
-- its line (no live entry, the solo holder included). A judgement of liveness from this
-- statement's snapshot decides only whom to wake, never a grant: a wake-up missed by it
-- is made up by the head's re-check at the lease end of the holder it waited behind.
CREATE OR REPLACE FUNCTION {s}.unfair_wake(k integer) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM {s}.line_entries e
                 JOIN {s}.sessions x ON x.id = e.session_id
                WHERE e.name_id = k AND NOT e.cancelled
                  AND x.expires_at > clock_timestamp()) THEN
        RETURN;
    END IF;
    PERFORM {s}.unfair_wake_head(k);
END
$$;

-- An entry left a line (a release of either lock, a withdrawal, the cascade of a session's
-- end): if the name has unfair waiters, wake the head once the line is empty. Runs after
-- the line's own trigger (semaphore_entries_gone sorts first), which has granted the
-- fair waiters it lets in: the fair line is served before the unfair waiters. A release
-- without unfair waiters costs one probe of an index.
CREATE OR REPLACE FUNCTION {s}.unfair_entry_gone() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM {s}.unfair_waiters WHERE name_id = OLD.name_id) THEN
        PERFORM {s}.unfair_wake(OLD.name_id);
    END IF;
    RETURN NULL;
END
$$;
CREATE OR REPLACE TRIGGER semaphore_entries_unfair_gone AFTER DELETE ON {s}.semaphore_entries
    FOR EACH ROW WHEN (NOT OLD.cancelled) EXECUTE FUNCTION {s}.unfair_entry_gone();

-- A withdrawal left a tombstone (semaphore_leave with p_tombstone, the entry not being
-- there): a dropped unfair wait, whose waiter row goes with it.
CREATE OR REPLACE FUNCTION {s}.unfair_withdrawn() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM {s}.unfair_waiters WHERE session_id = NEW.session_id AND entry = NEW.entry;
    RETURN NULL;
END
$$;
CREATE OR REPLACE TRIGGER semaphore_entries_unfair_withdrawn
    AFTER INSERT ON {s}.semaphore_entries
    FOR EACH ROW WHEN (NEW.cancelled) EXECUTE FUNCTION {s}.unfair_withdrawn();

-- A waiter left (withdrawn, or its session ended): if it was the head, the next one
-- becomes head, and is woken if the line is empty (the head may have been woken for a
-- release it will now never take up).
CREATE OR REPLACE FUNCTION {s}.unfair_waiter_gone() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM {s}.unfair_waiters
                    WHERE name_id = OLD.name_id AND ord < OLD.ord) THEN
        PERFORM {s}.unfair_wake(OLD.name_id);
    END IF;
    RETURN NULL;
END
$$;
CREATE OR REPLACE TRIGGER unfair_waiters_gone AFTER DELETE ON {s}.unfair_waiters
    FOR EACH ROW EXECUTE FUNCTION {s}.unfair_waiter_gone();

-- Takes the unfair lock k with entry (p_session, p_entry), under the name's row lock.
-- A free lock (no live solo holder, an empty line, the name not `lined`) is held solo, in
-- the name's row, with the next token, committed durably: the grant of the solo take,
-- for a waiter that asks again and for a take that found the row locked. A live solo
-- holder refuses it; anything else is the fair lock's try (semaphore_join without
-- waiting: a holder in the line, a solo holder whose session has ended or expired moved
-- into the line and judged there, sessions judged expired under their row locks by
-- fence_expired). o_state:
--   1 granted (o_token); the entry's waiter row, if any, goes (not with p_wait: none),
--     and the name's `waiters` mark with the last of them;
--   2 not granted, nothing registered (without p_wait);
--   0 not granted, waiting (with p_wait): registered in unfair_waiters, keeping its place
--     if it was already there, and the name marked `waiters`; o_wait: seconds until the
--     first lease end among the live holders and the line's entries (the waiter's safety
--     net, should its wake-up be lost); o_holder: the session of a solo holder, whose end
--     ('s:<id>') the waiter hears of, since no line's trigger wakes it then; a
--     registration commits asynchronously (lost in a crash, it is made again by the next
--     re-check);
--   3 the name is a semaphore's count in use (nothing registered; not for a lock);
--   4 the caller withdrew before this ran (nothing registered, the tombstone removed);
--   6 under unflushed grants, during the store's lock-delay (grant_gate): nothing taken
--     or registered, ask again in o_wait seconds.
-- Raises DS001 when the session has ended, DS002 when the name has no counter row.
CREATE OR REPLACE FUNCTION {s}.unfair_acquire(k integer, p_session bigint, p_entry bigint,
                                              p_wait boolean,
                                              OUT o_state integer, OUT o_token bigint,
                                              OUT o_wait double precision,
                                              OUT o_holder bigint)
LANGUAGE plpgsql AS $$
DECLARE
    is_lined boolean;
    h_session bigint;
    h_entry bigint;
    h_token bigint;
BEGIN
    SELECT l.lined, l.holder_session, l.holder_entry, l.token
      INTO is_lined, h_session, h_entry, h_token
      FROM {s}.lock_names l
      JOIN {s}.sessions x ON x.id = p_session AND x.expires_at > clock_timestamp()
      LEFT JOIN {s}.semaphores m ON m.name_id = l.id
     WHERE l.id = k AND l.kind = 'lock' AND coalesce(m.permits, 1) = 1
       FOR UPDATE OF l;
    IF FOUND AND h_session = p_session AND h_entry = p_entry THEN
        -- Asked again after an answer that was lost: it holds.
        o_state := 1;
        o_token := h_token;
    ELSIF FOUND AND NOT is_lined AND h_session IS NOT NULL
          AND EXISTS (SELECT 1 FROM {s}.sessions
                       WHERE id = h_session AND expires_at > clock_timestamp()) THEN
        o_state := 2;
        o_holder := h_session;
    ELSIF FOUND AND NOT is_lined AND h_session IS NULL
          AND NOT EXISTS (SELECT 1 FROM {s}.semaphore_entries WHERE name_id = k) THEN
        IF current_setting('distsync.unflushed_grants', true) <> '' THEN
            o_wait := {s}.grant_gate();
            IF o_wait IS NOT NULL THEN
                o_state := 6;
                RETURN;
            END IF;
        END IF;
        UPDATE {s}.lock_names
           SET token = token + 1, holder_session = p_session, holder_entry = p_entry,
               used_at = CASE WHEN used_at < clock_timestamp() - interval '1 second'
                              THEN clock_timestamp() ELSE used_at END
         WHERE id = k RETURNING token INTO o_token;
        o_state := 1;
    ELSE
        SELECT j.o_state, j.o_token, j.o_wait INTO o_state, o_token, o_wait
          FROM {s}.semaphore_join(k, p_session, p_entry, 1, false) AS j;
    END IF;
    IF NOT p_wait THEN
        RETURN;
    END IF;
    IF o_state = 1 THEN
        -- It holds: the waiter row's delete trigger wakes nobody.
        DELETE FROM {s}.unfair_waiters WHERE session_id = p_session AND entry = p_entry;
        IF NOT EXISTS (SELECT 1 FROM {s}.unfair_waiters WHERE name_id = k) THEN
            UPDATE {s}.lock_names SET waiters = false WHERE id = k AND waiters;
        END IF;
        RETURN;
    END IF;
    IF o_state <> 2 THEN
        RETURN;
    END IF;
    UPDATE {s}.lock_names SET waiters = true WHERE id = k AND NOT waiters;
    INSERT INTO {s}.unfair_waiters (name_id, session_id, entry)
         VALUES (k, p_session, p_entry)
    ON CONFLICT (session_id, entry) DO NOTHING;
    SELECT extract(epoch FROM min(x.expires_at) - clock_timestamp()) INTO o_wait
      FROM {s}.line_entries e
      JOIN {s}.sessions x ON x.id = e.session_id
     WHERE e.name_id = k AND NOT e.cancelled AND x.expires_at > clock_timestamp();
    PERFORM {s}.commit_async();
    o_state := 0;
END
$$;

-- The contenders of the unfair lock (p_kind, p_name): the live entries of its line
-- (holder and fair waiters) and its live unfair waiters. Reads only; registers nothing.
CREATE OR REPLACE FUNCTION {s}.unfair_contenders(p_kind text, p_name text) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT (SELECT count(*) FROM {s}.line_entries e
              JOIN {s}.sessions x ON x.id = e.session_id
             WHERE e.name_id = n.id AND NOT e.cancelled
               AND x.expires_at > clock_timestamp())
         + (SELECT count(*) FROM {s}.unfair_waiters u
              JOIN {s}.sessions x ON x.id = u.session_id
             WHERE u.name_id = n.id AND x.expires_at > clock_timestamp())
      FROM {s}.lock_names n
     WHERE n.kind = p_kind AND n.name = p_name
$$;
