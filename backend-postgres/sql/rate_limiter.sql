-- Rate limiters (GCRA): one row per limiter, the theoretical arrival time in µs of the
-- server's clock and the rate it was stored with (see src/rate_limiter.rs).
CREATE TABLE IF NOT EXISTS {s}.rate_limits (
    name text PRIMARY KEY,
    tat bigint NOT NULL,
    rate text NOT NULL
);

-- One decision: 'g' granted, 'd<µs>' denied with the wait, 'm<rate>' another rate is live.
-- The row is locked before clock_timestamp() is read, so `now` is the time of the
-- decision, after any wait for a concurrent caller.
CREATE OR REPLACE FUNCTION {s}.rate_limit(
    p_name text, p_interval bigint, p_burst bigint, p_permits bigint, p_rate text
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    stored_tat bigint;
    stored_rate text;
    now_us bigint;
    new_tat bigint;
    allow_at bigint;
BEGIN
    INSERT INTO {s}.rate_limits (name, tat, rate) VALUES (p_name, 0, p_rate)
        ON CONFLICT (name) DO NOTHING;
    SELECT r.tat, r.rate INTO stored_tat, stored_rate
        FROM {s}.rate_limits AS r WHERE r.name = p_name FOR UPDATE;
    now_us := (extract(epoch FROM clock_timestamp()) * 1000000)::bigint;
    IF stored_tat > now_us THEN
        IF stored_rate <> p_rate THEN
            RETURN 'm' || stored_rate;
        END IF;
    ELSE
        stored_tat := now_us;
    END IF;
    new_tat := stored_tat + p_permits * p_interval;
    allow_at := new_tat - p_burst * p_interval;
    IF allow_at > now_us THEN
        RETURN 'd' || (allow_at - now_us)::text;
    END IF;
    UPDATE {s}.rate_limits SET tat = new_tat, rate = p_rate WHERE name = p_name;
    RETURN 'g';
END
$$;
