-- Elections: the current leader (tied to its session) and a log of every win and
-- proclaim, for observe(), trimmed per election and pruned by age. Candidacies are
-- entries of the waiter line (waiter_line.sql).
CREATE TABLE IF NOT EXISTS {s}.election_leaders (
    election   text PRIMARY KEY,
    session_id bigint NOT NULL REFERENCES {s}.sessions (id) ON DELETE CASCADE,
    term       bigint NOT NULL,
    version    bigint NOT NULL,
    value      bytea NOT NULL
);
CREATE INDEX IF NOT EXISTS election_leaders_session ON {s}.election_leaders (session_id);

CREATE TABLE IF NOT EXISTS {s}.election_log (
    election   text NOT NULL,
    term       bigint NOT NULL,
    version    bigint NOT NULL,
    session_id bigint NOT NULL,
    value      bytea NOT NULL,
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (election, term, version)
);
CREATE INDEX IF NOT EXISTS election_log_at ON {s}.election_log (at);

CREATE OR REPLACE FUNCTION {s}.notify_election() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM {s}.notify('e:' || OLD.election);
    ELSE
        PERFORM {s}.notify('e:' || NEW.election);
    END IF;
    RETURN NULL;
END
$$;
CREATE OR REPLACE TRIGGER election_leaders_notify
    AFTER INSERT OR UPDATE OR DELETE ON {s}.election_leaders
    FOR EACH ROW EXECUTE FUNCTION {s}.notify_election();

-- Deletes up to p_limit election log entries older than p_age seconds.
CREATE OR REPLACE FUNCTION {s}.prune_election_log(p_age double precision, p_limit integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    gone integer;
BEGIN
    WITH old AS (
        SELECT election, term, version FROM {s}.election_log
         WHERE at < clock_timestamp() - p_age * interval '1 second'
         ORDER BY at LIMIT p_limit
    ), del AS (
        DELETE FROM {s}.election_log l USING old o
         WHERE (l.election, l.term, l.version) = (o.election, o.term, o.version)
        RETURNING 1
    )
    SELECT count(*) INTO gone FROM del;
    RETURN gone;
END
$$;

-- Keeps the last p_keep entries of election p_election's log.
CREATE OR REPLACE FUNCTION {s}.trim_election_log(p_election text, p_keep integer)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    t bigint;
    v bigint;
BEGIN
    SELECT term, version INTO t, v FROM {s}.election_log WHERE election = p_election
     ORDER BY term DESC, version DESC OFFSET greatest(p_keep, 1) LIMIT 1;
    IF t IS NOT NULL THEN
        DELETE FROM {s}.election_log WHERE election = p_election AND (term, version) <= (t, v);
    END IF;
END
$$;

-- A candidacy granted (see semaphore_check): starts term p_term of p_election with
-- p_session as the leader, logs it, and trims the log to p_keep entries.
CREATE OR REPLACE FUNCTION {s}.campaign_won(p_election text, p_session bigint, p_term bigint,
                                            p_value bytea, p_keep integer) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {s}.election_leaders (election, session_id, term, version, value)
         VALUES (p_election, p_session, p_term, 1, p_value)
    ON CONFLICT (election) DO UPDATE
            SET session_id = EXCLUDED.session_id, term = EXCLUDED.term,
                version = 1, value = EXCLUDED.value;
    INSERT INTO {s}.election_log (election, term, version, session_id, value)
         VALUES (p_election, p_term, 1, p_session, p_value);
    PERFORM {s}.trim_election_log(p_election, p_keep);
END
$$;

-- Replaces the leader's value if (p_session, p_term) still leads and its session has not
-- expired; false otherwise. Every 16 versions the log is trimmed to p_keep entries, so a
-- long-lived leader that proclaims often keeps it bounded.
CREATE OR REPLACE FUNCTION {s}.proclaim(p_election text, p_session bigint, p_term bigint,
                                        p_value bytea, p_keep integer) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v bigint;
BEGIN
    UPDATE {s}.election_leaders l SET version = version + 1, value = p_value
     WHERE l.election = p_election AND l.session_id = p_session AND l.term = p_term
       AND EXISTS (SELECT 1 FROM {s}.sessions x
                    WHERE x.id = p_session AND x.expires_at > clock_timestamp())
    RETURNING version INTO v;
    IF v IS NULL THEN
        RETURN false;
    END IF;
    INSERT INTO {s}.election_log (election, term, version, session_id, value)
         VALUES (p_election, p_term, v, p_session, p_value);
    IF v % 16 = 0 THEN
        PERFORM {s}.trim_election_log(p_election, p_keep);
    END IF;
    RETURN true;
END
$$;
