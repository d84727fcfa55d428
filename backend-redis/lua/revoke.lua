-- Ends a session: releases everything held through it (waking the next waiters),
-- deletes its key and tells its owner on the channel "<session key>:lost".
-- KEYS[1]: session key, KEYS[2]: its registry. ARGV: channel prefix, nonce or "", and
-- 'cluster' under Redis Cluster, where the held keys live in other slots: the client
-- has released them (one release.lua call each) and the registry is only deleted.
-- With a nonce (the owner closing its session), a session key holding another nonce
-- belongs to another session and is left alone; an empty nonce revokes whatever
-- session has the key. Returns 1 if a session key was deleted, else 0.
if ARGV[2] ~= '' then
  local nonce = redis.call('GET', KEYS[1])
  if nonce and nonce ~= ARGV[2] then
    return 0
  end
end
if ARGV[3] == 'cluster' then
  redis.call('DEL', KEYS[2])
else
  release_all(KEYS[2])
end
local existed = redis.call('DEL', KEYS[1])
publish(KEYS[1] .. ':lost', 'revoked')
return existed
