-- Writes p_value to STM key p_key if entry (p_session, p_entry) of name k is still a
-- current grant with token p_token: its row present (or it is the name's solo holder),
-- its session live, fewer than `permits` live entries ahead of it (see
-- crate::guarded). True if written.
CREATE OR REPLACE FUNCTION {s}.guarded_put(k integer, p_session bigint, p_entry bigint,
                                           p_token bigint, p_key text, p_value bytea)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    n integer;
    my_ord bigint;
    ahead integer;
BEGIN
    -- Every grant, solo take and release, and a solo holder's move into the line,
    -- takes or writes the name's row: the check runs wholly before or after each.
    PERFORM 1 FROM {s}.lock_names WHERE id = k FOR SHARE;
    SELECT permits INTO n FROM {s}.semaphores WHERE name_id = k;
    SELECT e.ord INTO my_ord
      FROM {s}.line_entries e
      JOIN {s}.sessions x ON x.id = e.session_id
     WHERE e.session_id = p_session AND e.entry = p_entry AND e.name_id = k
       AND NOT e.cancelled AND e.token = p_token AND x.expires_at > clock_timestamp();
    IF my_ord IS NULL THEN
        RETURN false;
    END IF;
    SELECT count(*) INTO ahead
      FROM {s}.line_entries e
      JOIN {s}.sessions x ON x.id = e.session_id
     WHERE e.name_id = k AND e.ord < my_ord AND NOT e.cancelled
       AND x.expires_at > clock_timestamp();
    IF ahead >= coalesce(n, 1) THEN
        RETURN false;
    END IF;
    INSERT INTO {s}.kv (key, value) VALUES (p_key, p_value)
    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;
    RETURN true;
END
$$;
