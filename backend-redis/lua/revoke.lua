-- Ends a session: releases everything held through it (waking the next waiters),
-- deletes its key and tells its owner on the channel "<session key>:lost".
-- KEYS[1]: session key, KEYS[2]: its registry. ARGV: channel prefix.
release_all(KEYS[2])
local existed = redis.call('DEL', KEYS[1])
publish(KEYS[1] .. ':lost', 'revoked')
return existed
