-- sem_grant as schemas made before it elected candidates have it (see the test
-- an_older_schema_is_upgraded_to_elect_in_the_release in gapless.rs): the fixture of a
-- schema to upgrade. A candidacy is only woken here, and elects itself in its own check.
-- Grants the waiters of name k that can be granted now (as semaphore_check would grant
-- them: the live entries without a token that are exclusive with fewer than `permits`
-- live entries ahead, or shared with no live exclusive entry ahead), in line order, and
-- notifies them; the transaction then commits synchronously, so a grant is durable
-- before its waiter learns of it. The caller holds the name's row lock. A candidacy is
-- only notified, and granted by its own statement (which writes its leader row).
--
-- The wake-up of a granted entry carries its token ('m:<session>.<entry>:<token>'), so
-- that the waiter needs no read to learn it, when the entry's client reads such
-- wake-ups: its entry numbers are at least 2^62 (crate::waiter_line::TOKEN_WAKE). An
-- older client's entry gets the payload it subscribed to ('m:<session>.<entry>') and
-- reads its token.
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
        t := NULL;
        IF w.election IS NULL THEN
            t := {s}.next_token(k);
            UPDATE {s}.semaphore_entries SET token = t WHERE ord = w.ord;
            PERFORM set_config('distsync.granted', 'on', true);
            PERFORM set_config('synchronous_commit', 'on', true);
        END IF;
        PERFORM {s}.notify('m:' || w.session_id::text || '.' || w.entry::text
                           || CASE WHEN t IS NOT NULL AND w.entry >= 4611686018427387904
                                   THEN ':' || t::text ELSE '' END);
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
        t := NULL;
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
        PERFORM {s}.notify('m:' || w.session_id::text || '.' || w.entry::text
                           || CASE WHEN t IS NOT NULL AND w.entry >= 4611686018427387904
                                   THEN ':' || t::text ELSE '' END);
    END LOOP;
END
$$;

-- Present once sem_grant carries the token in its wake-ups (see above).
CREATE OR REPLACE FUNCTION {s}.wake_carries_token() RETURNS boolean LANGUAGE sql AS $$
    SELECT true
$$;
