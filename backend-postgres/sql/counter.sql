-- Counters and count-down latches (see src/counter.rs): one row each, changed by one
-- statement at a time.
CREATE TABLE IF NOT EXISTS {s}.counters (
    name text PRIMARY KEY,
    value bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS {s}.latches (
    name text PRIMARY KEY,
    initial bigint NOT NULL,
    remaining bigint NOT NULL
);
-- One count-down: 'k<remaining>' after it, or 'm<initial>' when the latch exists with
-- another initial count (nothing changes). The row is created with the caller's count
-- if absent, then locked, so racing first count-downs make one latch.
CREATE OR REPLACE FUNCTION {s}.latch_count_down(p_name text, p_initial bigint)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    stored_initial bigint;
    v_remaining bigint;
BEGIN
    INSERT INTO {s}.latches (name, initial, remaining) VALUES (p_name, p_initial, p_initial)
        ON CONFLICT (name) DO NOTHING;
    SELECT l.initial, l.remaining INTO stored_initial, v_remaining
        FROM {s}.latches AS l WHERE l.name = p_name FOR UPDATE;
    IF stored_initial <> p_initial THEN
        RETURN 'm' || stored_initial;
    END IF;
    IF v_remaining = 0 THEN
        RETURN 'k0';
    END IF;
    v_remaining := v_remaining - 1;
    UPDATE {s}.latches SET remaining = v_remaining WHERE name = p_name;
    IF v_remaining = 0 THEN
        PERFORM {s}.notify('l:' || p_name);
    END IF;
    RETURN 'k' || v_remaining;
END
$$;
