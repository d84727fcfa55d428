-- Opens a session. KEYS[1]: the session key, KEYS[2]: its registry.
-- ARGV: channel prefix, nonce, ttl ms.
-- Returns 1 when the session key was created (holding the nonce), 0 when a session of
-- this id already exists (the client then draws another id). A registry left behind
-- by an earlier session of the same id (whose key expired) is dropped.
if not redis.call('SET', KEYS[1], ARGV[2], 'NX', 'PX', ARGV[3]) then
  return 0
end
redis.call('DEL', KEYS[2])
return 1
