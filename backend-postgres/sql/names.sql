-- The names of locks, read-write locks, elections and semaphores, each with its fencing
-- counter `token` (an election's term) and `used_at` (its last grant, to the second: a
-- grant within a second of the last one leaves it, so that its update is HOT). Unused
-- names are pruned (prune_names), their counters folded into `token_floor` first, so
-- that a name registered again never goes backwards.
-- A lock taken while nobody else wants it is held in its name's row (the solo holder,
-- see crate::waiter_line, "The solo holder"): `holder_session` and `holder_entry` name
-- it, its token is `token`. `lined` is true whenever the name's line may have an entry:
-- no solo holder is taken then. `waiters` is true while the unfair lock may have a waiter
-- (see crate::unfair_lock), set under the row's lock as a waiter registers and cleared
-- under it once none is left: a solo holder's release reads it from the row it updates,
-- and wakes the head only then. Half the page is left free, so that taking and releasing
-- a solo hold update the row in place (HOT).
CREATE TABLE IF NOT EXISTS {s}.lock_names (
    id             serial PRIMARY KEY,
    kind           text NOT NULL,
    name           text NOT NULL,
    token          bigint NOT NULL DEFAULT 0,
    used_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    holder_session bigint,
    holder_entry   bigint,
    lined          boolean NOT NULL DEFAULT false,
    waiters        boolean NOT NULL DEFAULT false,
    UNIQUE (kind, name)
) WITH (fillfactor = 50);
CREATE INDEX IF NOT EXISTS lock_names_used_at ON {s}.lock_names (used_at);

CREATE TABLE IF NOT EXISTS {s}.token_floor (
    floor bigint NOT NULL
);
INSERT INTO {s}.token_floor (floor) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM {s}.token_floor);

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

-- Deletes up to p_limit names unused for p_idle seconds that have no entry in line and
-- no solo holder whose session lives (and their semaphore rows), raising the token
-- floor to their highest counter first. A name locked by a grant in progress is
-- skipped; a waiter whose name went meanwhile finds no counter row (DS002) and
-- registers it again. Returns how many went.
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
           AND (n.holder_session IS NULL
                OR NOT EXISTS (SELECT 1 FROM {s}.sessions x WHERE x.id = n.holder_session))
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
