//! The counting semaphore: a line of entry rows per name, the first `N` live ones
//! holding a permit; waiters hold no connection and are woken one by one with `NOTIFY`.
//!
//! # Layout (created with the rest of the schema, see [`crate::schema`])
//! - `semaphores`: one row per name (`name_id`, the name's id in `lock_names`, kind
//!   `semaphore`), with the permit count `permits`. Its row lock serializes the joins
//!   and grants of one name.
//! - `semaphore_entries`: one row per acquisition, ordered by `ord` (a sequence drawn
//!   while holding the name's row lock, so arrival order), keyed by (session, entry
//!   number drawn by the client), referencing its session row (deleted with it), with
//!   the fencing `token` once granted.
//!
//! An entry is **live** while its session row has not expired. The first `permits` live
//! entries of a name hold a permit; the others wait in `ord` order. Entries only ever
//! leave the line (released, cancelled, their session deleted or expired), so an entry's
//! rank never grows: once within the first `permits`, it stays there until it leaves.
//!
//! # Granting
//! An entry is granted under the name's row lock, when fewer than `permits` live
//! entries are ahead of it, by its own caller's statement (`semaphore_join2`, then
//! `semaphore_check2` while waiting) or by the release that lets it in (the delete
//! trigger's `sem_grant`; see [`crate::hold`], "Granting"): it takes the next value of
//! the name's fencing counter (the `lock_names` row, bumped durably as the locks'
//! tokens are; so tokens never go backwards, across restarts too) and holds. Which
//! statements commit asynchronously, and why that is safe: [`crate::hold`],
//! "Asynchronous commits".
//!
//! # Waking (no herd)
//! Every waiter subscribes to its own payload `m:<session>.<entry>` on the backend's
//! notification hub ([`crate::notify`]) before it joins. When an entry leaves (a row
//! trigger on delete: a release, a cancelled wait, the cascade of a closed or revoked
//! session), `sem_grant` grants and notifies exactly the waiters now within the first
//! `permits` live entries that have no token yet; a grant by a check notifies those too
//! (`sem_wake`: two permits freed by concurrent transactions, each seeing only its own,
//! still wake both waiters). So a release wakes the waiter it lets in and nobody else.
//!
//! A deletion that does not run under the name's row lock (the cascade of a session's
//! end, which deletes entries of many names at once) takes that lock in the trigger if
//! it is free, never waiting for it (waiting could deadlock with the grants of those
//! names): joins and grants that come later wait for it and see the deletion. If a join
//! or grant holds the lock at that moment, it may not see the deletion, nor the trigger
//! its entry; then every waiter of the name is told to re-check (payload
//! `M:<name id>`, to which waiters subscribe too): the one case where a release wakes
//! more than the waiters it lets in.
//!
//! # The lease gate and crashes
//! A holder whose process died or whose connections closed keeps its session row until
//! that row expires (see [`crate::hold`]): its entry counts until then, so its permit is
//! never granted while it may still believe it holds. Each waiter re-checks at the
//! earliest expiry among the live entries ahead of it, the first moment the line can
//! move without a notification; a renewal moves that instant on. A clean release, and
//! the close of a healthy session (which deletes its row), hand over at once.
//!
//! # The count is part of the state
//! The first joiner of an unused name sets `permits`; a joiner naming another count while
//! the name has a live entry gets [`Error::InvalidArgument`], and joins nothing.
//!
//! # Cancel safety
//! A dropped `acquire` withdraws its entry in the background (`semaphore_leave2`,
//! retried until done or the session ends), releasing it if it was granted meanwhile.
//! The entry number is drawn before joining, so a withdrawal that overtakes a join
//! still in flight leaves a tombstone under the name's row lock, and that join then
//! gives up; a tombstone never counts and goes with its session.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use distsync_core::{Error, FencingToken, LockGuard, Name, ReleaseFn, Result, Semaphore, Session};

use crate::error::{is_conflict, is_session_gone, map, sqlstate};
use crate::lock::hold_key;
use crate::retry::Backoff;
use crate::session::LeaseInner;
use crate::store::{LockKind, Shared};
use crate::unflushed::Release;

/// The semaphore's tables and functions (`{s}`: the quoted schema), run by
/// [`crate::schema`] after its own DDL.
pub(crate) const DDL: &str = r#"
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
    UNIQUE (session_id, entry)
);
CREATE INDEX IF NOT EXISTS semaphore_entries_line ON {s}.semaphore_entries (name_id, ord);
-- Since version 9 the line also carries locks, read-write locks and candidacies (see
-- crate::hold): a shared entry (a read lock) holds beside other shared entries; a
-- candidacy carries its election's name and value, written as the leader on grant.
ALTER TABLE {s}.semaphore_entries ADD COLUMN IF NOT EXISTS shared boolean NOT NULL DEFAULT false;
ALTER TABLE {s}.semaphore_entries ADD COLUMN IF NOT EXISTS election text;
ALTER TABLE {s}.semaphore_entries ADD COLUMN IF NOT EXISTS value bytea;
CREATE INDEX IF NOT EXISTS semaphore_entries_shared ON {s}.semaphore_entries (name_id) WHERE shared;

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
-- what it wrote is lost in a crash of the server at no harm (see crate::hold,
-- "Asynchronous commits").
CREATE OR REPLACE FUNCTION {s}.commit_async() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('distsync.granted', true), '') <> 'on' THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
END
$$;

-- Grants the waiters of name k that can be granted now (as semaphore_check would grant
-- them: the live entries without a token that are exclusive with fewer than `permits`
-- live entries ahead, or shared with no live exclusive entry ahead), in line order, and
-- notifies them; the transaction then commits synchronously, so a grant is durable
-- before its waiter learns of it. The caller holds the name's row lock. A candidacy is
-- only notified, and granted by its own statement (which writes its leader row).
CREATE OR REPLACE FUNCTION {s}.sem_grant(k integer) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    n integer;
    w record;
    t bigint;
BEGIN
    SELECT permits INTO n FROM {s}.semaphores WHERE name_id = k;
    IF n IS NULL THEN
        RETURN;
    END IF;
    -- A line without shared entries: its first `permits` live entries, no window.
    FOR w IN
        SELECT q.ord, q.session_id, q.entry, q.shared, q.election
          FROM (SELECT e.ord, e.session_id, e.entry, e.token, e.shared, e.election
                  FROM {s}.semaphore_entries e
                  JOIN {s}.sessions x ON x.id = e.session_id
                 WHERE e.name_id = k AND NOT e.cancelled
                   AND x.expires_at > clock_timestamp()
                 ORDER BY e.ord
                 LIMIT n) AS q
         WHERE q.token IS NULL
           AND NOT EXISTS (SELECT 1 FROM {s}.semaphore_entries WHERE name_id = k AND shared)
         ORDER BY q.ord
    LOOP
        IF w.election IS NULL THEN
            t := {s}.next_token(k);
            UPDATE {s}.semaphore_entries SET token = t WHERE ord = w.ord;
            PERFORM set_config('distsync.granted', 'on', true);
            PERFORM set_config('synchronous_commit', 'on', true);
        END IF;
        PERFORM {s}.notify('m:' || w.session_id::text || '.' || w.entry::text);
    END LOOP;
    IF NOT EXISTS (SELECT 1 FROM {s}.semaphore_entries WHERE name_id = k AND shared) THEN
        RETURN;
    END IF;
    FOR w IN
        SELECT q.ord, q.session_id, q.entry, q.shared, q.election
          FROM (SELECT e.ord, e.session_id, e.entry, e.token, e.shared, e.election,
                       count(*) OVER (ORDER BY e.ord) - 1 AS before,
                       count(*) FILTER (WHERE NOT e.shared) OVER (ORDER BY e.ord) AS exclusive_upto
                  FROM {s}.semaphore_entries e
                  JOIN {s}.sessions x ON x.id = e.session_id
                 WHERE e.name_id = k AND NOT e.cancelled
                   AND x.expires_at > clock_timestamp()) AS q
         WHERE q.token IS NULL
           AND CASE WHEN q.shared THEN q.exclusive_upto = 0 ELSE q.before < n END
         ORDER BY q.ord
    LOOP
        IF w.election IS NULL THEN
            IF w.shared THEN
                t := 0;
            ELSE
                t := {s}.next_token(k);
            END IF;
            UPDATE {s}.semaphore_entries SET token = t WHERE ord = w.ord;
            PERFORM set_config('distsync.granted', 'on', true);
            PERFORM set_config('synchronous_commit', 'on', true);
        END IF;
        PERFORM {s}.notify('m:' || w.session_id::text || '.' || w.entry::text);
    END LOOP;
END
$$;

-- An entry left: wake whoever that lets in. The name's row lock is taken if free, never
-- waited for (a session's end deletes entries of many names at once: waiting could
-- deadlock), so that joins and grants after this one see the deletion. If a join or
-- grant holds it now, that one may not see the deletion: every waiter of the name is
-- told to re-check ('M:<name id>'), the one case with more wake-ups than grants.
-- Since version 18, with the name's lock taken, the waiters it lets in are granted
-- here (sem_grant) rather than by their own statements.
CREATE OR REPLACE FUNCTION {s}.semaphore_entry_gone() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    locked boolean;
BEGIN
    IF NOT OLD.cancelled THEN
        PERFORM 1 FROM {s}.semaphores WHERE name_id = OLD.name_id FOR UPDATE SKIP LOCKED;
        locked := FOUND;
        IF NOT locked THEN
            PERFORM {s}.notify('M:' || OLD.name_id::text);
        END IF;
        -- An empty line (an uncontended release) has nobody to wake.
        IF EXISTS (SELECT 1 FROM {s}.semaphore_entries
                    WHERE name_id = OLD.name_id AND NOT cancelled) THEN
            IF locked THEN
                PERFORM {s}.sem_grant(OLD.name_id);
            ELSE
                PERFORM {s}.sem_wake(OLD.name_id, 0);
            END IF;
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
    UPDATE {s}.lock_names SET token = token + 1,
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
-- server, to be joined again. An exclusive entry is granted with
-- fewer than `permits` live entries ahead and takes the next value of the name's
-- fencing counter; a shared entry (a read lock) with no live exclusive entry ahead, and
-- token 0. A candidacy's grant writes its election's leader row and log entry (the
-- token is the term). Raises DS002 when the name has no counter row. With p_async
-- (since version 17), a check that grants nothing commits asynchronously (it wrote only
-- a row lock); a grant always commits synchronously.
-- Since version 20 under a name of its own (semaphore_check2; semaphore_check keeps the
-- signature of earlier versions, see the end of this file).
DROP FUNCTION IF EXISTS {s}.semaphore_check(integer, bigint, bigint);
DROP FUNCTION IF EXISTS {s}.semaphore_check(integer, bigint, bigint, integer, boolean);
CREATE OR REPLACE FUNCTION {s}.semaphore_check2(k integer, p_session bigint, p_entry bigint,
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
    SELECT permits INTO n FROM {s}.semaphores WHERE name_id = k FOR UPDATE;
    SELECT e.ord, e.token, e.shared, e.election, e.value
      INTO my_ord, o_token, my_shared, my_election, my_value
      FROM {s}.semaphore_entries e
      JOIN {s}.sessions x ON x.id = e.session_id
     WHERE e.session_id = p_session AND e.entry = p_entry AND e.name_id = k
       AND NOT e.cancelled AND x.expires_at > clock_timestamp();
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
       AND x.expires_at > clock_timestamp();
    IF (my_shared AND exclusive_ahead = 0) OR (NOT my_shared AND ahead < coalesce(n, 1)) THEN
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
-- caller is gone, nobody reads this). Raises DS001 when the session has ended.
-- With p_async (since version 17), a join that waits commits asynchronously (see
-- crate::hold, "Asynchronous commits"); a grant always commits synchronously. An
-- empty line (the uncontended case) is granted with one read of the line index, one
-- update of the counter and one insert.
DROP FUNCTION IF EXISTS {s}.semaphore_join(integer, bigint, bigint, integer, boolean);
DROP FUNCTION IF EXISTS {s}.semaphore_join(integer, bigint, bigint, integer, boolean, boolean,
                                           text, bytea, integer, boolean);
CREATE OR REPLACE FUNCTION {s}.semaphore_join2(k integer, p_session bigint, p_entry bigint,
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
    expired boolean;
    now_ timestamptz;
BEGIN
    SELECT permits INTO n FROM {s}.semaphores WHERE name_id = k FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO {s}.semaphores (name_id, permits) VALUES (k, p_permits)
        ON CONFLICT (name_id) DO NOTHING;
        SELECT permits INTO n FROM {s}.semaphores WHERE name_id = k FOR UPDATE;
    END IF;
    PERFORM 1 FROM {s}.sessions WHERE id = p_session AND expires_at > clock_timestamp();
    IF NOT FOUND THEN
        RAISE EXCEPTION 'distsync session % has ended', p_session USING ERRCODE = 'DS001';
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
        -- One read of the line: its live entries, and whether any entry's session has
        -- expired.
        now_ := clock_timestamp();
        SELECT count(*) FILTER (WHERE NOT e.cancelled AND x.expires_at > now_),
               count(*) FILTER (WHERE NOT e.cancelled AND x.expires_at > now_ AND NOT e.shared),
               bool_or(x.expires_at <= now_)
          INTO live, live_exclusive, expired
          FROM {s}.semaphore_entries e
          JOIN {s}.sessions x ON x.id = e.session_id
         WHERE e.name_id = k;
        IF expired THEN
            -- Entries of expired sessions count no more: forget them, and count again.
            DELETE FROM {s}.semaphore_entries e USING {s}.sessions x
             WHERE e.name_id = k AND x.id = e.session_id AND x.expires_at <= clock_timestamp();
            SELECT count(*), count(*) FILTER (WHERE NOT e.shared) INTO live, live_exclusive
              FROM {s}.semaphore_entries e
              JOIN {s}.sessions x ON x.id = e.session_id
             WHERE e.name_id = k AND NOT e.cancelled AND x.expires_at > clock_timestamp();
        END IF;
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
                UPDATE {s}.lock_names SET token = token + 1,
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
    INSERT INTO {s}.semaphore_entries (name_id, session_id, entry, shared, election, value)
         VALUES (k, p_session, p_entry, p_shared, p_election, p_value);
    SELECT c.o_state, c.o_token, c.o_wait INTO o_state, o_token, o_wait
      FROM {s}.semaphore_check2(k, p_session, p_entry, p_log_keep, p_async) AS c;
END
$$;

-- Removes entry (p_session, p_entry) of name k (a release, a resign, or a withdrawn
-- wait), with the leader row of a candidacy that led; true if it was there. With
-- p_tombstone, an entry not there yet gets a tombstone, so that a join of it still in
-- flight gives up (see semaphore_join). Without p_sync (since version 17) it commits
-- asynchronously: a release lost in a crash of the server only brings the entry back,
-- and the client that made it leaves it again once it sees the crash (see crate::hold,
-- "Asynchronous commits"; crate::unflushed).
DROP FUNCTION IF EXISTS {s}.semaphore_leave(integer, bigint, bigint, boolean, boolean);
CREATE OR REPLACE FUNCTION {s}.semaphore_leave2(k integer, p_session bigint, p_entry bigint,
                                               p_tombstone boolean,
                                               p_sync boolean DEFAULT true) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    gone_election text;
    gone_token bigint;
BEGIN
    IF NOT p_sync THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    PERFORM 1 FROM {s}.semaphores WHERE name_id = k FOR UPDATE;
    DELETE FROM {s}.semaphore_entries
     WHERE session_id = p_session AND entry = p_entry AND NOT cancelled
    RETURNING election, token INTO gone_election, gone_token;
    IF FOUND THEN
        -- A candidacy that led: its term ends with it (a resign, or a dropped campaign
        -- granted meanwhile).
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

-- The functions under the names and signatures of versions 16 and earlier, for clients
-- of those versions running against this schema: they commit synchronously, as
-- before. (A client of such a version that connects re-creates its own bodies under
-- these names and leaves semaphore_join2, semaphore_check2 and semaphore_leave2 alone, so that neither version's calls become
-- ambiguous.)
CREATE OR REPLACE FUNCTION {s}.semaphore_check(k integer, p_session bigint, p_entry bigint,
                                    p_log_keep integer DEFAULT 1000,
                                    OUT o_state integer, OUT o_token bigint,
                                    OUT o_wait double precision)
LANGUAGE sql AS $$
    SELECT c.o_state, c.o_token, c.o_wait FROM {s}.semaphore_check2(k, p_session, p_entry, p_log_keep, false) AS c
$$;
CREATE OR REPLACE FUNCTION {s}.semaphore_join(k integer, p_session bigint, p_entry bigint,
                                              p_permits integer, wait boolean,
                                              p_shared boolean DEFAULT false,
                                              p_election text DEFAULT NULL,
                                              p_value bytea DEFAULT NULL,
                                              p_log_keep integer DEFAULT 1000,
                                              OUT o_state integer, OUT o_token bigint,
                                              OUT o_wait double precision,
                                              OUT o_in_use integer)
LANGUAGE sql AS $$
    SELECT j.o_state, j.o_token, j.o_wait, j.o_in_use
      FROM {s}.semaphore_join2(k, p_session, p_entry, p_permits, wait, p_shared, p_election, p_value,
                        p_log_keep, false) AS j
$$;
CREATE OR REPLACE FUNCTION {s}.semaphore_leave(k integer, p_session bigint, p_entry bigint,
                                               p_tombstone boolean) RETURNS boolean
LANGUAGE sql AS $$
    SELECT {s}.semaphore_leave2(k, p_session, p_entry, p_tombstone, true)
$$;
"#;

/// Entry numbers of this process; with the session id (never reused) they identify an
/// entry.
static ENTRIES: AtomicI64 = AtomicI64::new(1);

/// A PostgreSQL counting semaphore (see the module docs).
pub(crate) struct PgSemaphore {
    pub(crate) lease: Arc<LeaseInner>,
    pub(crate) session: Session,
    pub(crate) name: Name,
    pub(crate) permits: usize,
    /// `permits` as the `integer` the schema's functions take.
    pub(crate) permits_sql: i32,
}

/// What an entry asks of the line: the semaphore's, and the holds' of
/// [`crate::hold`] (locks, read-write locks, candidacies).
#[derive(Clone, Copy)]
pub(crate) struct Ask<'a> {
    /// The kind of the name (its row in `lock_names`).
    pub(crate) kind: LockKind,
    /// The permits of the name (1 for locks, write locks and elections).
    pub(crate) permits: i32,
    /// A shared entry (a read lock): holds beside other shared entries.
    pub(crate) shared: bool,
    /// A candidacy: its value, written as the election's leader on grant.
    pub(crate) campaign: Option<&'a [u8]>,
}

/// One entry of the line, as the schema's functions address it.
#[derive(Clone)]
pub(crate) struct Entry {
    pub(crate) shared: Arc<Shared>,
    /// The name's id in `lock_names`.
    pub(crate) name_id: i32,
    /// The session's id.
    pub(crate) session: i64,
    /// The entry's number (unique in this process; with the session, in the store).
    pub(crate) entry: i64,
}

/// What a join or a check found.
enum Outcome {
    Granted(i64),
    Waiting(Option<Duration>),
    Refused,
    OtherCount(i32),
    Gone,
    /// The entry is gone but its session lives: its join, committed asynchronously,
    /// was lost in a crash of the server. Joined again.
    Vanished,
}

type Row = (Option<i32>, Option<i64>, Option<f64>, Option<i32>);

fn outcome(row: Row) -> Result<Outcome> {
    let (state, token, wait, in_use) = row;
    let wait = wait.and_then(|secs| Duration::try_from_secs_f64(secs.clamp(0.0, 3600.0)).ok());
    Ok(match (state, token) {
        (Some(1), Some(token)) => Outcome::Granted(token),
        (Some(0), _) => Outcome::Waiting(wait),
        (Some(2), _) => Outcome::Refused,
        (Some(3), _) => Outcome::OtherCount(in_use.unwrap_or(0)),
        (Some(-1), _) => Outcome::Gone,
        (Some(5), _) => Outcome::Vanished,
        _ => {
            return Err(Error::backend(
                crate::error::BACKEND,
                format!("unexpected semaphore state {state:?}"),
            ))
        }
    })
}

/// Maps a statement error: an ended session is the session lost.
fn entry_error(lease: &LeaseInner, error: sqlx::Error) -> Error {
    crate::hold::session_error(lease, error)
}

/// Whether `error` is `DS002`: the name has no counter row.
fn is_missing_name(error: &sqlx::Error) -> bool {
    sqlstate(error).as_deref() == Some("DS002")
}

/// How often an entry lost by the server is joined again before giving up.
const VANISHED_REJOINS: u32 = 3;

/// How often a join, check or leave is repeated after PostgreSQL aborted it as a
/// deadlock victim or a serialization failure.
const CONFLICT_RETRIES: u32 = 5;

/// Runs `statement`, again when PostgreSQL aborted it as a deadlock victim (40P01) or a
/// serialization failure (40001): each of these is one statement in its own
/// transaction, rolled back whole when aborted, so repeating it is safe. The grants
/// themselves take their rows in one order, but other transactions may not (a schema
/// upgrade replacing triggers while older clients run, an administrator's statement).
async fn again_after_conflicts<T, F, Fut>(mut statement: F) -> std::result::Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, sqlx::Error>>,
{
    let mut tries = 0;
    loop {
        match statement().await {
            Err(error) if is_conflict(&error) && tries < CONFLICT_RETRIES => {
                tries += 1;
                tracing::debug!(%error, tries, "a grant statement was aborted by a conflict; repeating it");
                tokio::time::sleep(Duration::from_millis(5 << tries)).await;
            }
            other => return other,
        }
    }
}

impl Entry {
    async fn join(
        &self,
        ask: &Ask<'_>,
        election: &str,
        wait: bool,
    ) -> std::result::Result<Outcome, sqlx::Error> {
        let sql = self.shared.sql(
            "SELECT o_state, o_token, o_wait, o_in_use \
             FROM {s}.semaphore_join2($1, $2, $3, $4, $5, $6, $7, $8, $9, true)",
        );
        let row: Row = again_after_conflicts(|| async {
            let mut taken = self.shared.holds.take().await?;
            let joined = sqlx::query_as(&sql)
                .bind(self.name_id)
                .bind(self.session)
                .bind(self.entry)
                .bind(ask.permits)
                .bind(wait)
                .bind(ask.shared)
                .bind(ask.campaign.map(|_| election))
                .bind(ask.campaign)
                .bind(self.shared.limits().log_keep_sql())
                .fetch_one(taken.conn())
                .await;
            taken.settle(joined)
        })
        .await?;
        outcome(row).map_err(|error| sqlx::Error::Protocol(error.to_string()))
    }

    async fn check(&self) -> std::result::Result<Outcome, sqlx::Error> {
        let sql = self.shared.sql(
            "SELECT o_state, o_token, o_wait, NULL::integer \
             FROM {s}.semaphore_check2($1, $2, $3, $4, true)",
        );
        let row: Row = again_after_conflicts(|| async {
            let mut taken = self.shared.holds.take().await?;
            let checked = sqlx::query_as(&sql)
                .bind(self.name_id)
                .bind(self.session)
                .bind(self.entry)
                .bind(self.shared.limits().log_keep_sql())
                .fetch_one(taken.conn())
                .await;
            taken.settle(checked)
        })
        .await?;
        outcome(row).map_err(|error| sqlx::Error::Protocol(error.to_string()))
    }

    /// Removes the entry; `Ok(true)` if it was there. See `semaphore_leave2`. Commits
    /// asynchronously when the backend can tell a release the server lost in a crash
    /// and make it again ([`crate::unflushed`]), synchronously otherwise.
    pub(crate) async fn leave(&self, tombstone: bool) -> std::result::Result<bool, sqlx::Error> {
        let unflushed = &self.shared.unflushed;
        let sync = !unflushed.enabled();
        // The epoch known before sending (see crate::unflushed).
        let epoch = unflushed.epoch();
        let sql = self
            .shared
            .sql("SELECT {s}.semaphore_leave2($1, $2, $3, $4, $5)");
        let left = again_after_conflicts(|| async {
            let mut taken = self.shared.holds.take().await?;
            let left = sqlx::query_scalar(&sql)
                .bind(self.name_id)
                .bind(self.session)
                .bind(self.entry)
                .bind(tombstone)
                .bind(sync)
                .fetch_one(taken.conn())
                .await;
            taken.settle(left)
        })
        .await?;
        if !sync {
            unflushed.record(
                epoch,
                Release {
                    name_id: self.name_id,
                    session: self.session,
                    entry: self.entry,
                    tombstone,
                },
            );
        }
        Ok(left)
    }

    /// Withdraws the entry in the background (a dropped wait, a release that failed):
    /// retried until done or the session ends, whose end takes the entry with it.
    pub(crate) fn leave_in_background(self, lease: &Arc<LeaseInner>, tombstone: bool) {
        let lost = lease.lost_token();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                session = self.session,
                "entry abandoned outside a runtime; it ends with its session"
            );
            return;
        };
        runtime.spawn(async move {
            let mut backoff = Backoff::new();
            loop {
                let error = tokio::select! {
                    biased;
                    () = lost.cancelled() => return,
                    left = self.leave(tombstone) => match left {
                        Ok(_) => return,
                        Err(error) if is_session_gone(&error) => return,
                        Err(error) => map(error),
                    },
                };
                if !Backoff::retryable(&error) {
                    tracing::warn!(session = self.session, %error, "withdrawing an entry failed; it ends with its session");
                    return;
                }
                backoff.pause("withdrawing an entry", &error).await;
            }
        });
    }
}

/// Withdraws an entry when dropped armed: the clean-up of a dropped acquisition.
struct Cleanup {
    entry: Option<Entry>,
    lease: Arc<LeaseInner>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            tracing::debug!(
                session = entry.session,
                entry = entry.entry,
                "acquisition dropped; withdrawing its entry"
            );
            entry.leave_in_background(&self.lease, true);
        }
    }
}

/// Joins the line of `ask.kind` `name` and, if `wait`, waits until granted. Returns the
/// entry and its token, or `None` for a failed try. A cached name id whose row has gone
/// (pruned, see [`crate::store`]) is looked up afresh, once.
///
/// Cancel-safe: a dropped call withdraws its entry in the background.
pub(crate) async fn take(
    lease: &Arc<LeaseInner>,
    name: &Name,
    ask: &Ask<'_>,
    wait: bool,
) -> Result<Option<(Entry, i64)>> {
    let mut retried = false;
    let mut rejoined = 0;
    loop {
        match attempt(lease, name, ask, wait).await {
            Err(AttemptError::Vanished) if rejoined < VANISHED_REJOINS => {
                tracing::info!(%name, "an entry in line was lost by the server (a crash?); joining again");
                rejoined += 1;
            }
            Err(AttemptError::Vanished) => {
                return Err(Error::backend(
                    crate::error::BACKEND,
                    format!(
                        "the entry in the line of {:?} keeps vanishing",
                        name.as_str()
                    ),
                ))
            }
            Err(AttemptError::MissingName) if !retried => {
                tracing::debug!(%name, "name row gone; registering it again");
                lease.shared.forget_name(ask.kind, name.as_str());
                retried = true;
            }
            Err(AttemptError::MissingName) => {
                return Err(Error::backend(
                    crate::error::BACKEND,
                    format!(
                        "the {} name {:?} has no counter row",
                        ask.kind.as_str(),
                        name.as_str()
                    ),
                ))
            }
            Err(AttemptError::Other(error)) => return Err(error),
            Ok(granted) => return Ok(granted),
        }
    }
}

async fn attempt(
    lease: &Arc<LeaseInner>,
    name: &Name,
    ask: &Ask<'_>,
    wait: bool,
) -> std::result::Result<Option<(Entry, i64)>, AttemptError> {
    if lease.is_lost() {
        return Err(Error::SessionLost.into());
    }
    let shared = &lease.shared;
    let entry = Entry {
        shared: Arc::clone(shared),
        name_id: shared.name_id(ask.kind, name.as_str()).await?,
        session: lease.id,
        entry: ENTRIES.fetch_add(1, Ordering::Relaxed),
    };
    // Subscribed before joining: a wake-up committed after the join is never missed.
    let mut wake = if wait {
        let own = format!("m:{}.{}", entry.session, entry.entry);
        let everyone = format!("M:{}", entry.name_id);
        Some((
            shared.hub.subscribe(own).await?,
            shared.hub.subscribe(everyone).await?,
        ))
    } else {
        None
    };
    let mut cleanup = Cleanup {
        entry: Some(entry.clone()),
        lease: Arc::clone(lease),
    };
    // A waiting call outlasts a wait for a hold connection (many callers at once on a
    // few `hold_connections`): no connection within the request timeout means its
    // statement was never sent, so the join is tried again, until the session ends.
    let joined = loop {
        match entry.join(ask, name.as_str(), wait).await {
            Err(sqlx::Error::PoolTimedOut) if wait => {
                if lease.is_lost() {
                    cleanup.entry = None;
                    return Err(Error::SessionLost.into());
                }
                tracing::debug!(%name, "no hold connection free within the request timeout; still waiting for one");
            }
            joined => break joined,
        }
    };
    let mut state = match joined {
        Ok(state) => state,
        Err(error) if is_missing_name(&error) => {
            // The statement failed as a whole: nothing joined.
            cleanup.entry = None;
            return Err(AttemptError::MissingName);
        }
        Err(error) => return Err(entry_error(lease, error).into()),
    };
    let lost = lease.lost_token();
    let fallback = lease.ttl;
    let mut backoff = Backoff::new();
    loop {
        let pause = match state {
            Outcome::Granted(token) => {
                cleanup.entry = None;
                return Ok(Some((entry, token)));
            }
            Outcome::Refused => {
                cleanup.entry = None;
                return Ok(None);
            }
            Outcome::OtherCount(in_use) => {
                cleanup.entry = None;
                return Err(Error::InvalidArgument(format!(
                    "semaphore {:?} is in use with {in_use} permits, not {}",
                    name.as_str(),
                    ask.permits
                ))
                .into());
            }
            Outcome::Gone => {
                cleanup.entry = None;
                lease.fail();
                return Err(Error::SessionLost.into());
            }
            Outcome::Vanished => {
                cleanup.entry = None;
                return Err(AttemptError::Vanished);
            }
            Outcome::Waiting(until) => {
                until.map_or(fallback, |until| until + Duration::from_millis(5))
            }
        };
        let Some((own, everyone)) = wake.as_mut() else {
            // Not waiting: a join that did not grant refuses (state 2); anything else
            // is withdrawn by the clean-up.
            return Ok(None);
        };
        tokio::select! {
            biased;
            () = lost.cancelled() => return Err(Error::SessionLost.into()),
            woke = own.changed() => { woke?; }
            woke = everyone.changed() => { woke?; }
            () = tokio::time::sleep(pause) => {}
        }
        state = loop {
            match entry.check().await {
                Ok(state) => {
                    backoff.reset();
                    break state;
                }
                Err(error) if is_missing_name(&error) => return Err(AttemptError::MissingName),
                Err(error) => {
                    let error = entry_error(lease, error);
                    if !Backoff::retryable(&error) {
                        return Err(error.into());
                    }
                    // Once in line, connection trouble is ridden out (checking is
                    // idempotent).
                    tokio::select! {
                        biased;
                        () = lost.cancelled() => return Err(Error::SessionLost.into()),
                        () = backoff.pause("a place in line", &error) => {}
                    }
                }
            }
        };
    }
}

impl PgSemaphore {
    async fn acquire_or_try(&self, wait: bool) -> Result<Option<LockGuard>> {
        let ask = Ask {
            kind: LockKind::Semaphore,
            permits: self.permits_sql,
            shared: false,
            campaign: None,
        };
        Ok(take(&self.lease, &self.name, &ask, wait)
            .await?
            .map(|(entry, token)| self.guard(entry, token)))
    }

    fn guard(&self, entry: Entry, token: i64) -> LockGuard {
        let key = format!(
            "{}/{}",
            hold_key(&self.lease, "semaphore", &self.name),
            entry.entry
        );
        let guarded = crate::guarded::hook(&entry, token);
        LockGuard::new(
            key,
            FencingToken(u64::try_from(token).unwrap_or_default()),
            &self.session,
            release_fn(&self.lease, entry),
        )
        .with_guarded_write(guarded)
    }
}

/// Why one attempt failed: the name's counter row is gone (register it again, once),
/// the entry vanished (its asynchronous join lost in a crash of the server: join
/// again), or anything else.
enum AttemptError {
    MissingName,
    Vanished,
    Other(Error),
}

impl From<Error> for AttemptError {
    fn from(error: Error) -> Self {
        AttemptError::Other(error)
    }
}

/// The release step of an entry (a permit, a lock, a read or write lock): delete it
/// (waking the waiter it lets in). [`Error::SessionLost`] if the entry was gone already
/// (its session ended); on a transient failure, the release goes on in the background
/// and the error is returned.
pub(crate) fn release_fn(lease: &Arc<LeaseInner>, entry: Entry) -> ReleaseFn {
    let lease = Arc::clone(lease);
    Box::new(move || {
        Box::pin(async move {
            match entry.leave(false).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(Error::SessionLost),
                Err(error) => {
                    let error = entry_error(&lease, error);
                    if error.is_transient() {
                        entry.leave_in_background(&lease, false);
                    }
                    Err(error)
                }
            }
        })
    })
}

#[async_trait]
impl Semaphore for PgSemaphore {
    fn name(&self) -> &Name {
        &self.name
    }

    fn permits(&self) -> usize {
        self.permits
    }

    /// Joins the line and waits until this entry is among the first `permits` live ones.
    ///
    /// Cancel-safety: cancel-safe; a dropped call withdraws its entry in the background
    /// (releasing the permit if it was granted meanwhile), or leaves it to the session.
    async fn acquire(&self) -> Result<LockGuard> {
        self.acquire_or_try(true).await?.ok_or_else(|| {
            Error::backend(
                crate::error::BACKEND,
                "a waiting semaphore acquire returned without a permit",
            )
        })
    }

    /// Takes a permit if fewer than `permits` live entries are in line (a free permit,
    /// nobody waiting).
    ///
    /// Cancel-safety: cancel-safe; a dropped call withdraws what it may have joined.
    async fn try_acquire(&self) -> Result<Option<LockGuard>> {
        self.acquire_or_try(false).await
    }
}

/// On a real server: a waiting acquisition and the holds' connections.
#[cfg(test)]
mod server_tests {
    use std::time::Duration;

    use distsync_conformance::server_url;
    use distsync_core::{Backend, Name, SessionOptions};

    /// With every hold connection busy for longer than the request timeout, `lock()`
    /// keeps waiting (its join was never sent) instead of failing, and is granted once
    /// a connection is free.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_waiting_lock_outlasts_a_wait_for_a_hold_connection() {
        let Some(url) = server_url("DISTSYNC_POSTGRES_URL") else {
            return;
        };
        let separator = if url.contains('?') { '&' } else { '?' };
        let timeout = Duration::from_millis(300);
        let backend = crate::backend(&format!(
            "{url}{separator}hold_connections=1&timeout={}ms",
            timeout.as_millis()
        ))
        .await
        .unwrap();
        let session = backend.session(SessionOptions::default()).await.unwrap();
        let name = Name::new(format!("busy-holds-{}", session.id().0)).unwrap();
        let locker = backend.locker(&session, name).unwrap();
        // Registers the name, so that the wait below is the join's alone.
        locker
            .try_lock()
            .await
            .unwrap()
            .unwrap()
            .unlock()
            .await
            .unwrap();
        let busy = backend.shared.holds.take().await.unwrap();
        let lock = tokio::spawn(async move { locker.lock().await });
        // The absence of a failure can only be seen over time: three request timeouts.
        tokio::time::sleep(timeout * 3).await;
        assert!(
            !lock.is_finished(),
            "lock() ended while it could not get a hold connection: {:?}",
            lock.await
        );
        drop(busy);
        let guard = tokio::time::timeout(Duration::from_secs(10), lock)
            .await
            .expect("lock() granted once a hold connection is free")
            .unwrap()
            .unwrap();
        guard.unlock().await.unwrap();
        session.close().await.unwrap();
    }
}
