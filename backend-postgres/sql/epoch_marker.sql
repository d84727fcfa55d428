-- The store's epoch marker (see crate::amnesia): one row, written by the first client
-- with a bound on session TTLs on a store without one, or by a client that found the
-- store forgot. `id` is random, so a store that forgot (a fresh initdb, a recreated
-- database or schema) is told from the one a client knew; `ttl_ms` is the longest
-- session TTL in use; `token_offset` the highest fencing token handed out before the
-- store forgot; until `hold_until` no client grants anything (the lock-delay).
CREATE TABLE IF NOT EXISTS {s}.epoch_marker (
    one          boolean PRIMARY KEY DEFAULT true CHECK (one),
    id           text NOT NULL,
    ttl_ms       bigint NOT NULL,
    token_offset bigint NOT NULL DEFAULT 0,
    hold_until   timestamptz NOT NULL
);
