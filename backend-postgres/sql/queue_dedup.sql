-- Enqueues' idempotency records: a key (`u:<user key>`, or `g:<call id>` for the key a
-- plain enqueue draws) seen on a queue before `expires_at` appends nothing; `call` is
-- the id of the call that recorded it, so that its own repeat after a lost reply knows
-- the item is appended. Expired records are swept by later enqueues.
CREATE TABLE IF NOT EXISTS {s}.queue_dedup (
    queue      text NOT NULL,
    key        text NOT NULL,
    call       text NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (queue, key)
);
CREATE INDEX IF NOT EXISTS queue_dedup_expires ON {s}.queue_dedup (expires_at);
