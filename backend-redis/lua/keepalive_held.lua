-- Renews the keys a session holds in one hash slot (Redis Cluster, where the session
-- key and its holds live in different slots: keepalive.lua renews the session key,
-- this script the held keys of each slot, all sent at once).
-- KEYS: the held entry keys of one slot. ARGV: channel prefix, ttl ms, margin ms, then
-- the value each key must hold, in KEYS order.
-- Returns 1 when every key holds its value with at least the margin left of its TTL,
-- and renews them all. Returns 0 otherwise, renewing none: a key is gone or holds
-- another value (released by a revoke, expired), or the renewal arrives after the
-- owner's client-side deadline (see keepalive.lua); the owner then declares the
-- session lost and releases what is left.
local margin = tonumber(ARGV[3])
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) ~= ARGV[3 + i] then
    return 0
  end
  if redis.call('PTTL', KEYS[i]) < margin then
    return 0
  end
end
for i = 1, #KEYS do
  redis.call('PEXPIRE', KEYS[i], ARGV[2])
end
return 1
