-- The waiter line of every name (see crate::waiter_line): the permit count of each name
-- with a line, and one entry row per acquisition, in arrival order (`ord`). A shared
-- entry (a read lock) holds beside other shared entries; a candidacy carries its
-- election's name and value, written as the leader on grant.
CREATE TABLE IF NOT EXISTS {s}.semaphores (
    name_id integer PRIMARY KEY,
    permits integer NOT NULL
);

CREATE TABLE IF NOT EXISTS {s}.semaphore_entries (
    ord        bigserial PRIMARY KEY,
    name_id    integer NOT NULL,
    session_id bigint NOT NULL REFERENCES {s}.sessions (id) ON DELETE CASCADE,
    entry      bigint NOT NULL,
    token      bigint,
    cancelled  boolean NOT NULL DEFAULT false,
    shared     boolean NOT NULL DEFAULT false,
    election   text,
    value      bytea,
    UNIQUE (session_id, entry)
);
CREATE INDEX IF NOT EXISTS semaphore_entries_line ON {s}.semaphore_entries (name_id, ord);
CREATE INDEX IF NOT EXISTS semaphore_entries_shared ON {s}.semaphore_entries (name_id) WHERE shared;

-- Every entry of every line, the solo holders included (as the first entry of their
-- name's line, `ord` 0): what readers of the holders read (status, export, the guarded
-- write, the contenders). A solo holder whose session row has gone is gone, as an entry
-- goes with its session's row.
CREATE OR REPLACE VIEW {s}.line_entries AS
    SELECT ord, name_id, session_id, entry, token, cancelled, shared, election, value
      FROM {s}.semaphore_entries
    UNION ALL
    SELECT 0::bigint, n.id, n.holder_session, n.holder_entry, n.token, false, false,
           NULL::text, NULL::bytea
      FROM {s}.lock_names n
     WHERE n.holder_session IS NOT NULL
       AND EXISTS (SELECT 1 FROM {s}.sessions x WHERE x.id = n.holder_session);

-- Puts the solo holder of lock k, if any, into its line as an entry holding its token,
-- and marks the name `lined`, so that no solo holder is taken while the line may have
-- entries (names of other kinds have no solo holder). The caller holds the name's row
-- lock and is about to read or join the line. The holder's entry goes first: the line
-- has no live entry while a solo holder holds (`lined` was false). A holder whose
-- session row has gone is dropped. Once in the line, the holder's release is an entry's
-- delete, whose trigger wakes the waiters (see crate::waiter_line, "The solo holder").
CREATE OR REPLACE FUNCTION {s}.line_claim(k integer) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    h_session bigint;
    h_entry bigint;
    h_token bigint;
BEGIN
    SELECT holder_session, holder_entry, token INTO h_session, h_entry, h_token
      FROM {s}.lock_names
     WHERE id = k AND kind = 'lock' AND (holder_session IS NOT NULL OR NOT lined);
    IF NOT FOUND THEN
        RETURN;
    END IF;
    UPDATE {s}.lock_names SET holder_session = NULL, holder_entry = NULL, lined = true
     WHERE id = k;
    IF h_session IS NULL THEN
        RETURN;
    END IF;
    -- Waits for an end of the session in flight, so the entry never outlives its row.
    PERFORM 1 FROM {s}.sessions WHERE id = h_session FOR KEY SHARE;
    IF FOUND THEN
        INSERT INTO {s}.semaphore_entries (name_id, session_id, entry, token)
             VALUES (k, h_session, h_entry, h_token)
        ON CONFLICT (session_id, entry) DO NOTHING;
    END IF;
END
$$;

-- Notifies the waiters of name k that can be granted now, other than the entry
-- `except_ord`: the live entries without a token that are exclusive with fewer than
-- `permits` live entries ahead, or shared with no live exclusive entry ahead. A line
-- without shared entries reads only its first `permits` entries.
CREATE OR REPLACE FUNCTION {s}.sem_wake(k integer, except_ord bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    SELECT permits INTO n FROM {s}.semaphores WHERE name_id = k;
    IF n IS NULL THEN
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM {s}.semaphore_entries WHERE name_id = k AND shared) THEN
        PERFORM {s}.notify('m:' || w.session_id::text || '.' || w.entry::text)
           FROM (SELECT e.ord, e.session_id, e.entry, e.token
                   FROM {s}.semaphore_entries e
                   JOIN {s}.sessions x ON x.id = e.session_id
                  WHERE e.name_id = k AND NOT e.cancelled AND x.expires_at > clock_timestamp()
                  ORDER BY e.ord
                  LIMIT n) AS w
          WHERE w.token IS NULL AND w.ord <> except_ord;
        RETURN;
    END IF;
    PERFORM {s}.notify('m:' || w.session_id::text || '.' || w.entry::text)
       FROM (SELECT e.ord, e.session_id, e.entry, e.token, e.shared,
                    count(*) OVER (ORDER BY e.ord) - 1 AS before,
                    count(*) FILTER (WHERE NOT e.shared) OVER (ORDER BY e.ord) AS exclusive_upto
               FROM {s}.semaphore_entries e
               JOIN {s}.sessions x ON x.id = e.session_id
              WHERE e.name_id = k AND NOT e.cancelled
                AND x.expires_at > clock_timestamp()) AS w
      WHERE w.token IS NULL AND w.ord <> except_ord
        AND CASE WHEN w.shared THEN w.exclusive_upto = 0 ELSE w.before < n END;
END
$$;

-- Commits the transaction asynchronously unless it granted something (see sem_grant):
-- what it wrote is lost in a crash of the server at no harm (see crate::waiter_line,
-- "Asynchronous commits").
CREATE OR REPLACE FUNCTION {s}.commit_async() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('distsync.granted', true), '') <> 'on' THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
END
$$;

-- An entry left: wake whoever that lets in. The name's row lock is taken if free, never
-- waited for (a session's end deletes entries of many names at once: waiting could
-- deadlock), so that joins and grants after this one see the deletion. If a join or
-- grant holds it now, that one may not see the deletion: every waiter of the name is
-- told to re-check ('M:<name id>'), the one case with more wake-ups than grants.
-- With the name's lock taken, the waiters it lets in are granted here (sem_grant).
CREATE OR REPLACE FUNCTION {s}.semaphore_entry_gone() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    locked boolean;
BEGIN
    IF NOT OLD.cancelled THEN
        PERFORM 1 FROM {s}.lock_names WHERE id = OLD.name_id FOR UPDATE SKIP LOCKED;
        locked := FOUND;
        IF NOT locked THEN
            PERFORM {s}.notify('M:' || OLD.name_id::text);
        END IF;
        -- An empty line has nobody to wake; with the name's lock, the next uncontended
        -- take may hold solo again (the unfair lock's waiters, woken by
        -- semaphore_entries_unfair_gone, take solo too).
        IF EXISTS (SELECT 1 FROM {s}.semaphore_entries
                    WHERE name_id = OLD.name_id AND NOT cancelled) THEN
            IF locked THEN
                PERFORM {s}.sem_grant(OLD.name_id);
            ELSE
                PERFORM {s}.sem_wake(OLD.name_id, 0);
            END IF;
        ELSIF locked THEN
            UPDATE {s}.lock_names SET lined = false WHERE id = OLD.name_id AND lined;
        END IF;
    END IF;
    RETURN NULL;
END
$$;
CREATE OR REPLACE TRIGGER semaphore_entries_gone AFTER DELETE ON {s}.semaphore_entries
    FOR EACH ROW EXECUTE FUNCTION {s}.semaphore_entry_gone();

-- The next fencing token of name k, bumped durably with the grant's transaction.
-- used_at is kept to the second: rewritten only once it is a second old, so that the
-- other grants leave the indexed column alone and update the row in place (HOT, no
-- new index entries).
CREATE OR REPLACE FUNCTION {s}.next_token(k integer) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    t bigint;
BEGIN
    UPDATE {s}.lock_names SET token = token + 1, lined = lined OR kind = 'lock',
           used_at = CASE WHEN used_at < clock_timestamp() - interval '1 second'
                          THEN clock_timestamp() ELSE used_at END
     WHERE id = k RETURNING token INTO t;
    IF t IS NULL THEN
        RAISE EXCEPTION 'distsync lock name % has no counter row', k
            USING ERRCODE = 'DS002';
    END IF;
    RETURN t;
END
$$;

-- Re-checks entry (p_session, p_entry) of name k. o_state: 1 granted (o_token), 0
-- waiting (o_wait: seconds until the first expiry among the live entries ahead), -1 the
-- entry is gone (its session ended or expired), 5 (only with p_async) the entry is gone
-- but its session is live: a join committed asynchronously and lost in a crash of the
-- server, to be joined again. An exclusive entry is granted with fewer than `permits`
-- live entries ahead and takes the next value of the name's fencing counter; a shared
-- entry (a read lock) with no live exclusive entry ahead, and token 0. A candidacy's
-- grant writes its election's leader row and log entry (the token is the term). Raises
-- DS002 when the name has no counter row. With p_async, a check that grants nothing
-- commits asynchronously (it wrote only a row lock); a grant always commits
-- synchronously, except under unflushed grants (grant_gate, see
-- sql/unflushed_grants.sql), which also answer 6: nothing granted during the store's
-- lock-delay, the entry kept, ask again in o_wait seconds.
CREATE OR REPLACE FUNCTION {s}.semaphore_check(k integer, p_session bigint, p_entry bigint,
                                               p_log_keep integer DEFAULT 1000,
                                               p_async boolean DEFAULT false,
                                               OUT o_state integer, OUT o_token bigint,
                                               OUT o_wait double precision)
LANGUAGE plpgsql AS $$
DECLARE
    n integer;
    my_ord bigint;
    my_shared boolean;
    my_election text;
    my_value bytea;
    ahead integer;
    exclusive_ahead integer;
    dead bigint[];
BEGIN
    -- Granted meanwhile (by the release that let it in, see sem_grant): a read, no
    -- lock, nothing written.
    SELECT e.token INTO o_token
      FROM {s}.semaphore_entries e
      JOIN {s}.sessions x ON x.id = e.session_id
     WHERE e.session_id = p_session AND e.entry = p_entry AND e.name_id = k
       AND NOT e.cancelled AND e.token IS NOT NULL AND x.expires_at > clock_timestamp();
    IF o_token IS NOT NULL THEN
        o_state := 1;
        RETURN;
    END IF;
    PERFORM 1 FROM {s}.lock_names WHERE id = k FOR UPDATE;
    SELECT permits INTO n FROM {s}.semaphores WHERE name_id = k;
    -- Which sessions of the line are dead is settled once, under their row locks
    -- (fence_expired); every other entry counts as live below.
    dead := {s}.fence_expired(ARRAY(SELECT e.session_id FROM {s}.semaphore_entries e
                                     WHERE e.name_id = k AND NOT e.cancelled));
    SELECT e.ord, e.token, e.shared, e.election, e.value
      INTO my_ord, o_token, my_shared, my_election, my_value
      FROM {s}.semaphore_entries e
     WHERE e.session_id = p_session AND e.entry = p_entry AND e.name_id = k
       AND NOT e.cancelled AND e.session_id <> ALL (dead);
    IF my_ord IS NULL THEN
        o_state := -1;
        o_token := NULL;
        IF p_async THEN
            PERFORM {s}.commit_async();
            IF EXISTS (SELECT 1 FROM {s}.sessions
                        WHERE id = p_session AND expires_at > clock_timestamp()) THEN
                o_state := 5;
            END IF;
        END IF;
        RETURN;
    END IF;
    IF o_token IS NOT NULL THEN
        o_state := 1;
        RETURN;
    END IF;
    SELECT count(*), count(*) FILTER (WHERE NOT e.shared),
           extract(epoch FROM min(x.expires_at) - clock_timestamp())
      INTO ahead, exclusive_ahead, o_wait
      FROM {s}.semaphore_entries e
      JOIN {s}.sessions x ON x.id = e.session_id
     WHERE e.name_id = k AND e.ord < my_ord AND NOT e.cancelled
       AND e.session_id <> ALL (dead);
    IF (my_shared AND exclusive_ahead = 0) OR (NOT my_shared AND ahead < coalesce(n, 1)) THEN
        IF current_setting('distsync.unflushed_grants', true) <> '' THEN
            o_wait := {s}.grant_gate();
            IF o_wait IS NOT NULL THEN
                o_state := 6;
                RETURN;
            END IF;
        END IF;
        IF my_shared THEN
            o_token := 0;
        ELSE
            o_token := {s}.next_token(k);
        END IF;
        UPDATE {s}.semaphore_entries SET token = o_token WHERE ord = my_ord;
        IF my_election IS NOT NULL THEN
            PERFORM {s}.campaign_won(my_election, p_session, o_token, my_value, p_log_keep);
        END IF;
        PERFORM {s}.sem_wake(k, my_ord);
        o_state := 1;
        o_wait := NULL;
        RETURN;
    END IF;
    IF p_async THEN
        -- Nothing granted: losing this commit in a crash loses at most the entry
        -- joined by this transaction (see o_state 5).
        PERFORM {s}.commit_async();
    END IF;
    o_state := 0;
END
$$;

-- Joins name k with entry (p_session, p_entry), naming p_permits permits, waiting or not;
-- shared (a read lock) or not, for election p_election with p_value (a candidacy) or not.
-- o_state: as semaphore_check; 2 a failed try (nothing joined: an exclusive try with
-- `permits` live entries in line, a shared try with a live exclusive entry in line,
-- holding or waiting); 3 another count is in use (o_in_use, nothing joined); 4 the
-- caller withdrew before this ran (tombstone found and removed, nothing joined: the
-- caller is gone, nobody reads this); 6 under unflushed grants, during the store's
-- lock-delay (grant_gate): nothing joined, join again in o_wait seconds. Raises DS001
-- when the session has ended.
-- With p_async, a join that waits commits asynchronously (see crate::waiter_line,
-- "Asynchronous commits"); a grant commits synchronously, except under unflushed
-- grants. An
-- empty line (the uncontended case) is granted with one read of the line index, one
-- update of the counter and one insert.
CREATE OR REPLACE FUNCTION {s}.semaphore_join(k integer, p_session bigint, p_entry bigint,
                                              p_permits integer, wait boolean,
                                              p_shared boolean DEFAULT false,
                                              p_election text DEFAULT NULL,
                                              p_value bytea DEFAULT NULL,
                                              p_log_keep integer DEFAULT 1000,
                                              p_async boolean DEFAULT false,
                                              OUT o_state integer, OUT o_token bigint,
                                              OUT o_wait double precision,
                                              OUT o_in_use integer)
LANGUAGE plpgsql AS $$
DECLARE
    n integer;
    live integer := 0;
    live_exclusive integer := 0;
    dead bigint[];
BEGIN
    PERFORM 1 FROM {s}.lock_names WHERE id = k FOR UPDATE;
    SELECT permits INTO n FROM {s}.semaphores WHERE name_id = k;
    IF NOT FOUND THEN
        INSERT INTO {s}.semaphores (name_id, permits) VALUES (k, p_permits)
        ON CONFLICT (name_id) DO NOTHING;
        SELECT permits INTO n FROM {s}.semaphores WHERE name_id = k;
    END IF;
    PERFORM 1 FROM {s}.sessions WHERE id = p_session AND expires_at > clock_timestamp();
    IF NOT FOUND THEN
        RAISE EXCEPTION 'distsync session % has ended', p_session USING ERRCODE = 'DS001';
    END IF;
    -- A solo holder joins the line first, as its first entry.
    PERFORM {s}.line_claim(k);
    -- Under unflushed grants, nothing joins during the store's lock-delay: a join told
    -- to wait has left nothing behind.
    IF current_setting('distsync.unflushed_grants', true) <> '' THEN
        o_wait := {s}.grant_gate();
        IF o_wait IS NOT NULL THEN
            o_state := 6;
            RETURN;
        END IF;
    END IF;
    -- Rows of the name (a tombstone, live or expired entries): none in the uncontended
    -- case, which then reads nothing more.
    IF EXISTS (SELECT 1 FROM {s}.semaphore_entries WHERE name_id = k) THEN
        DELETE FROM {s}.semaphore_entries
         WHERE session_id = p_session AND entry = p_entry AND cancelled;
        IF FOUND THEN
            o_state := 4;
            RETURN;
        END IF;
        -- Entries of expired sessions count no more (settled under the sessions' row
        -- locks, see fence_expired): forget them. Every other entry counts as live.
        dead := {s}.fence_expired(ARRAY(SELECT e.session_id FROM {s}.semaphore_entries e
                                         WHERE e.name_id = k AND NOT e.cancelled));
        IF cardinality(dead) > 0 THEN
            DELETE FROM {s}.semaphore_entries
             WHERE name_id = k AND session_id = ANY (dead);
        END IF;
        -- One read of the line: its live entries.
        SELECT count(*) FILTER (WHERE NOT e.cancelled),
               count(*) FILTER (WHERE NOT e.cancelled AND NOT e.shared)
          INTO live, live_exclusive
          FROM {s}.semaphore_entries e
         WHERE e.name_id = k;
    END IF;
    IF n <> p_permits THEN
        IF live > 0 THEN
            o_state := 3;
            o_in_use := n;
            RETURN;
        END IF;
        UPDATE {s}.semaphores SET permits = p_permits WHERE name_id = k;
    END IF;
    IF NOT wait AND ((p_shared AND live_exclusive > 0) OR (NOT p_shared AND live >= p_permits)) THEN
        o_state := 2;
        RETURN;
    END IF;
    IF live = 0 THEN
        -- Nobody in line: granted at once, as semaphore_check would (no entry ahead,
        -- nobody to wake), the entry inserted with its token in one statement.
        IF p_shared THEN
            o_token := 0;
            INSERT INTO {s}.semaphore_entries (name_id, session_id, entry, shared, election,
                                               value, token)
                 VALUES (k, p_session, p_entry, p_shared, p_election, p_value, o_token);
        ELSE
            -- The counter bumped and the entry inserted in one statement (next_token's
            -- update, inlined).
            WITH t AS (
                UPDATE {s}.lock_names SET token = token + 1, lined = lined OR kind = 'lock',
                       used_at = CASE WHEN used_at < clock_timestamp() - interval '1 second'
                                      THEN clock_timestamp() ELSE used_at END
                 WHERE id = k RETURNING token
            )
            INSERT INTO {s}.semaphore_entries (name_id, session_id, entry, shared, election,
                                               value, token)
                 SELECT k, p_session, p_entry, false, p_election, p_value, t.token FROM t
            RETURNING token INTO o_token;
            IF o_token IS NULL THEN
                RAISE EXCEPTION 'distsync lock name % has no counter row', k
                    USING ERRCODE = 'DS002';
            END IF;
        END IF;
        IF p_election IS NOT NULL THEN
            PERFORM {s}.campaign_won(p_election, p_session, o_token, p_value, p_log_keep);
        END IF;
        o_state := 1;
        RETURN;
    END IF;
    UPDATE {s}.lock_names SET lined = true WHERE id = k AND kind = 'lock' AND NOT lined;
    INSERT INTO {s}.semaphore_entries (name_id, session_id, entry, shared, election, value)
         VALUES (k, p_session, p_entry, p_shared, p_election, p_value);
    SELECT c.o_state, c.o_token, c.o_wait INTO o_state, o_token, o_wait
      FROM {s}.semaphore_check(k, p_session, p_entry, p_log_keep, p_async) AS c;
END
$$;

-- Removes entry (p_session, p_entry) of name k (a release, a resign, or a withdrawn
-- wait), with the leader row of a candidacy that led; true if it was there. With
-- p_tombstone, an entry not there yet gets a tombstone, so that a join of it still in
-- flight gives up (see semaphore_join). Without p_sync it commits
-- asynchronously: a release lost in a crash of the server only brings the entry back,
-- and the client that made it leaves it again once it sees the crash (see
-- crate::waiter_line, "Asynchronous commits"; crate::connection::unflushed).
CREATE OR REPLACE FUNCTION {s}.semaphore_leave(k integer, p_session bigint, p_entry bigint,
                                               p_tombstone boolean,
                                               p_sync boolean DEFAULT true) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    gone_election text;
    gone_token bigint;
    unfair_waiting boolean;
BEGIN
    IF NOT p_sync THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    -- A solo holder leaves its name's row: nobody waits in its line, and the unfair
    -- lock's head, if any, is woken (the row's newest version says whether one waits).
    UPDATE {s}.lock_names SET holder_session = NULL, holder_entry = NULL
     WHERE id = k AND holder_session = p_session AND holder_entry = p_entry
    RETURNING waiters INTO unfair_waiting;
    IF FOUND THEN
        IF unfair_waiting THEN
            PERFORM {s}.unfair_wake_head(k);
        END IF;
        RETURN true;
    END IF;
    PERFORM 1 FROM {s}.lock_names WHERE id = k FOR UPDATE;
    DELETE FROM {s}.semaphore_entries
     WHERE session_id = p_session AND entry = p_entry AND NOT cancelled
    RETURNING election, token INTO gone_election, gone_token;
    IF FOUND THEN
        -- A candidacy that led: its term ends with it (a resign, or a dropped campaign
        -- granted meanwhile). The delete trigger has already elected the next live
        -- candidate, if any, replacing the row (see sem_grant): then this deletes
        -- nothing, and the election never lacks a leader.
        IF gone_election IS NOT NULL AND gone_token IS NOT NULL THEN
            DELETE FROM {s}.election_leaders
             WHERE election = gone_election AND session_id = p_session AND term = gone_token;
        END IF;
        RETURN true;
    END IF;
    IF p_tombstone THEN
        INSERT INTO {s}.semaphore_entries (name_id, session_id, entry, cancelled)
             SELECT k, p_session, p_entry, true
              WHERE EXISTS (SELECT 1 FROM {s}.sessions WHERE id = p_session)
        ON CONFLICT (session_id, entry) DO NOTHING;
    END IF;
    RETURN false;
END
$$;
