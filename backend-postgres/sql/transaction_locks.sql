-- The fencing tokens of transaction locks (see crate::transaction_lock): drawn once the
-- lock is taken, from a sequence, which a rollback does not rewind, so that no two
-- holders of one name ever get the same token, even when one of them rolled back.
CREATE SEQUENCE IF NOT EXISTS {s}.transaction_lock_tokens;
