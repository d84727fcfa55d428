-- The server's epoch: its last checkpoint's location and timeline (see
-- crate::connection::unflushed). It moves at every checkpoint, so after every crash recovery and
-- promotion. NULL when the role may not read it.
CREATE OR REPLACE FUNCTION {s}.server_epoch() RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RETURN (SELECT c.checkpoint_lsn::text || '/' || c.timeline_id::text
              FROM pg_control_checkpoint() AS c);
EXCEPTION WHEN insufficient_privilege OR undefined_function THEN
    RETURN NULL;
END
$$;
