-- The queues (see crate::queue): items in order (priority, then arrival), each held by
-- at most one session's receive (`held_by`, `held_call`); claims in flight, named by the
-- consumer's call id, so that a retry after a lost reply finds the item its first
-- attempt took; and the line of waiting consumers, woken one per item.
CREATE TABLE IF NOT EXISTS {s}.queue_items (
    id         bigserial PRIMARY KEY,
    queue      text NOT NULL,
    priority   integer NOT NULL,
    item       bytea NOT NULL,
    held_by    bigint,
    held_call  text,
    deliveries integer NOT NULL DEFAULT 0,
    -- When the item was enqueued (or put back), on the server's clock: the age of a
    -- queue's oldest item.
    enqueued_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS queue_items_order ON {s}.queue_items (queue, priority, id);

CREATE TABLE IF NOT EXISTS {s}.queue_inflight (
    call       text PRIMARY KEY,
    id         bigint NOT NULL,
    queue      text NOT NULL,
    priority   integer NOT NULL,
    item       bytea NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE UNIQUE INDEX IF NOT EXISTS queue_items_held_call ON {s}.queue_items (held_call)
    WHERE held_call IS NOT NULL;
CREATE INDEX IF NOT EXISTS queue_items_held_by ON {s}.queue_items (held_by)
    WHERE held_by IS NOT NULL;
CREATE INDEX IF NOT EXISTS queue_inflight_claimed_at ON {s}.queue_inflight (claimed_at);

CREATE TABLE IF NOT EXISTS {s}.queue_waiters (
    id         bigserial PRIMARY KEY,
    queue      text NOT NULL,
    waiter     text NOT NULL UNIQUE,
    expires_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_waiters_line ON {s}.queue_waiters (queue, id);

-- Whether an item held by p_session counts as held: its session is live, as settled
-- under the session row's lock (fence_expired), which every reader of the items uses
-- (a receive or a dequeue that takes an item, an acknowledgement, a count). An expiry
-- read from a snapshot misses a renewal that checked the row before its expiry and
-- commits after the snapshot: the item would go to another consumer while its holder's
-- renewal succeeds, and both would hold it. A session whose row is being written (a
-- renewal in flight) counts as live; one judged dead cannot be renewed afterwards.
-- VOLATILE, so that it reads the sessions with a snapshot of its own, taken when it is
-- called: a receive's `FOR UPDATE SKIP LOCKED` re-checks an item that another receive
-- held meanwhile against the item's newest version, and that receive's session, if
-- created after the statement began, is invisible to the statement's snapshot; it
-- would count as ended, and the item would be held twice.
CREATE OR REPLACE FUNCTION {s}.queue_held(p_session bigint) RETURNS boolean
LANGUAGE sql VOLATILE AS $$
    SELECT p_session IS NOT NULL AND p_session <> ALL ({s}.fence_expired(ARRAY[p_session]))
$$;

-- Wakes the first live waiter of p_queue (taking it out of the line), if any.
CREATE OR REPLACE FUNCTION {s}.queue_wake(p_queue text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    w text;
    live boolean;
BEGIN
    LOOP
        w := NULL;
        DELETE FROM {s}.queue_waiters WHERE id = (
            SELECT id FROM {s}.queue_waiters WHERE queue = p_queue
             ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
        RETURNING waiter, expires_at > clock_timestamp() INTO w, live;
        IF w IS NULL THEN
            RETURN;
        END IF;
        IF live THEN
            PERFORM {s}.notify('W:' || w);
            RETURN;
        END IF;
    END LOOP;
END
$$;

-- Withdraws p_waiter. If it was no longer in line (a wake-up took it out: it may have
-- consumed one meant for another item) and p_queue has an item nobody holds, wakes the
-- next waiter: the wake-up is passed on. A waiter still in line consumed none, and
-- passes nothing on (a spurious wake-up would let a later waiter overtake an earlier
-- one that is already woken for the item).
CREATE OR REPLACE FUNCTION {s}.queue_pass(p_queue text, p_waiter text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM {s}.queue_waiters WHERE waiter = p_waiter;
    IF NOT FOUND AND EXISTS (SELECT 1 FROM {s}.queue_items i WHERE i.queue = p_queue
                AND (i.held_by IS NULL OR NOT {s}.queue_held(i.held_by))) THEN
        PERFORM {s}.queue_wake(p_queue);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION {s}.notify_queue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM {s}.queue_wake(NEW.queue);
    RETURN NULL;
END
$$;
-- Deferred to the commit of the inserting transaction: an item enqueued in a caller's
-- transaction (crate::outbox) is visible only from its commit, and a consumer that
-- joins the line while that transaction is still open must be among those the item
-- can wake (woken at the insert, the line would not hold it yet, and its own re-check
-- would not see the item). A constraint trigger has no OR REPLACE: dropped first, so
-- that installing over a schema that lost its layout marker (a server that forgot, an
-- operator's drop of the marker) replaces it as every other object is replaced.
DROP TRIGGER IF EXISTS queue_items_notify ON {s}.queue_items;
CREATE CONSTRAINT TRIGGER queue_items_notify AFTER INSERT ON {s}.queue_items
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION {s}.notify_queue();

-- A session's end makes the items it held visible again: one waiter per item.
CREATE OR REPLACE FUNCTION {s}.queue_session_end() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM {s}.queue_wake(i.queue) FROM {s}.queue_items i WHERE i.held_by = OLD.id;
    RETURN NULL;
END
$$;
CREATE OR REPLACE TRIGGER sessions_queue_end AFTER DELETE ON {s}.sessions
    FOR EACH ROW EXECUTE FUNCTION {s}.queue_session_end();

-- Acknowledges, inside the caller's own transaction, the item p_id held by the receive
-- p_call of session p_session: deletes it while the hold is still that receive's and
-- the session live (queue_held), or raises DS001, which aborts the caller's transaction
-- so that its own writes roll back with the acknowledgement that failed (see
-- crate::acknowledge_in).
-- The delete's row lock keeps every other receive off the item until the transaction
-- ends: committed, the item is gone; rolled back, it is held as before.
CREATE OR REPLACE FUNCTION {s}.queue_ack_in(p_id bigint, p_call text, p_session bigint)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM {s}.queue_items WHERE id = p_id AND held_call = p_call
       AND held_by = p_session AND {s}.queue_held(p_session);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'distsync queue delivery is no longer held: its session ended or the item was delivered again'
            USING ERRCODE = 'DS001';
    END IF;
END
$$;
