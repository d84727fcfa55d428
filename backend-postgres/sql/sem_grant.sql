-- The grants of a release (see crate::waiter_line, "Granting").

-- Grants the waiters of name k that can be granted now (as semaphore_check would grant
-- them: the live entries without a token that are exclusive with fewer than `permits`
-- live entries ahead, or shared with no live exclusive entry ahead), in line order, and
-- notifies them; the transaction then commits synchronously, so a grant is durable
-- before its waiter learns of it. The caller holds the name's row lock. Under unflushed
-- grants (the setting distsync.unflushed_grants, see sql/unflushed_grants.sql) the
-- grants pass grant_gate first and the transaction commits as the release asked.
--
-- A candidacy is elected here too: its term (the token) is drawn, and its leader row
-- and log entry are written (campaign_won), in the transaction that removed the entry
-- ahead of it. So a resignation, a withdrawn leader or a closed leader's session hands
-- the election to the next live candidate in one commit: a reader sees the old leader
-- or the new one, never neither and never both. Entries whose session has expired are
-- passed over (the lease gate): they are not live, so they neither count nor get
-- elected; which sessions have expired is settled under their row locks
-- (fence_expired). The log is trimmed to the count in the setting distsync.log_keep,
-- which a client releasing a candidacy sets in its statement
-- (crate::waiter_line::Entry::leave); a release without it (a session's end) leaves the
-- trim to the next grant, proclaim or sweep.
--
-- The wake-up of a granted entry carries its token ('m:<session>.<entry>:<token>'), so
-- that the waiter needs no read to learn it.
CREATE OR REPLACE FUNCTION {s}.sem_grant(k integer) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    n integer;
    w record;
    t bigint;
    keep integer := coalesce(nullif(current_setting('distsync.log_keep', true), '')::integer,
                             2147483647);
    dead bigint[];
    unflushed boolean;
BEGIN
    SELECT permits INTO n FROM {s}.semaphores WHERE name_id = k;
    IF n IS NULL THEN
        RETURN;
    END IF;
    unflushed := coalesce(current_setting('distsync.unflushed_grants', true), '') <> '';
    -- Under unflushed grants, during the store's lock-delay nothing is granted here: the
    -- waiters it would let in are woken to ask, and are told how long to wait.
    IF unflushed AND {s}.grant_gate(false) IS NOT NULL THEN
        PERFORM {s}.sem_wake(k, 0);
        RETURN;
    END IF;
    -- Which sessions of the line are dead is settled once, under their row locks
    -- (fence_expired); every other entry counts as live below.
    dead := {s}.fence_expired(ARRAY(SELECT e.session_id FROM {s}.semaphore_entries e
                                     WHERE e.name_id = k AND NOT e.cancelled));
    -- A line without shared entries: its first `permits` live entries, no window.
    FOR w IN
        SELECT q.ord, q.session_id, q.entry, q.shared, q.election, q.value
          FROM (SELECT e.ord, e.session_id, e.entry, e.token, e.shared, e.election, e.value
                  FROM {s}.semaphore_entries e
                 WHERE e.name_id = k AND NOT e.cancelled AND e.session_id <> ALL (dead)
                 ORDER BY e.ord
                 LIMIT n) AS q
         WHERE q.token IS NULL
           AND NOT EXISTS (SELECT 1 FROM {s}.semaphore_entries WHERE name_id = k AND shared)
         ORDER BY q.ord
    LOOP
        t := {s}.next_token(k);
        UPDATE {s}.semaphore_entries SET token = t WHERE ord = w.ord;
        IF w.election IS NOT NULL THEN
            PERFORM {s}.campaign_won(w.election, w.session_id, t, w.value, keep);
        END IF;
        IF NOT unflushed THEN
            PERFORM set_config('distsync.granted', 'on', true);
            PERFORM set_config('synchronous_commit', 'on', true);
        END IF;
        PERFORM {s}.notify('m:' || w.session_id::text || '.' || w.entry::text
                           || ':' || t::text);
    END LOOP;
    IF NOT EXISTS (SELECT 1 FROM {s}.semaphore_entries WHERE name_id = k AND shared) THEN
        RETURN;
    END IF;
    FOR w IN
        SELECT q.ord, q.session_id, q.entry, q.shared, q.election, q.value
          FROM (SELECT e.ord, e.session_id, e.entry, e.token, e.shared, e.election, e.value,
                       count(*) OVER (ORDER BY e.ord) - 1 AS before,
                       count(*) FILTER (WHERE NOT e.shared) OVER (ORDER BY e.ord) AS exclusive_upto
                  FROM {s}.semaphore_entries e
                 WHERE e.name_id = k AND NOT e.cancelled
                   AND e.session_id <> ALL (dead)) AS q
         WHERE q.token IS NULL
           AND CASE WHEN q.shared THEN q.exclusive_upto = 0 ELSE q.before < n END
         ORDER BY q.ord
    LOOP
        IF w.shared THEN
            t := 0;
        ELSE
            t := {s}.next_token(k);
        END IF;
        UPDATE {s}.semaphore_entries SET token = t WHERE ord = w.ord;
        IF w.election IS NOT NULL THEN
            PERFORM {s}.campaign_won(w.election, w.session_id, t, w.value, keep);
        END IF;
        IF NOT unflushed THEN
            PERFORM set_config('distsync.granted', 'on', true);
            PERFORM set_config('synchronous_commit', 'on', true);
        END IF;
        PERFORM {s}.notify('m:' || w.session_id::text || '.' || w.entry::text
                           || ':' || t::text);
    END LOOP;
END
$$;

