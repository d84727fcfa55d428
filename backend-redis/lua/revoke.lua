-- Ends a session: releases everything held through it (waking the next waiters) and
-- deletes its key. KEYS[1]: session key, KEYS[2]: its registry. ARGV: channel prefix.
release_all(KEYS[2])
return redis.call('DEL', KEYS[1])
