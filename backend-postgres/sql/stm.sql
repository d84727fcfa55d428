-- The STM's keys (see crate::stm); guarded writes write them too (guarded.sql).
CREATE TABLE IF NOT EXISTS {s}.kv (
    key   text PRIMARY KEY,
    value bytea NOT NULL
);
