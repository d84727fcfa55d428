-- Renews a session and everything held through it, in one round trip.
-- KEYS[1]: session key, KEYS[2]: its registry (entry key -> expected value); under
-- Redis Cluster only KEYS[1], the held keys being renewed slot by slot with
-- keepalive_held.lua.
-- ARGV: channel prefix, ttl ms, nonce (the session key's value), margin ms.
-- Returns 1 when renewed. Returns 0 when the session key is gone, holds another nonce
-- (another session's key: the server lost this one, e.g. in a restart, and the id was
-- taken again), has less than the margin left of its TTL (the renewal arrives after
-- the owner's client-side deadline: see RedisLease::keep_alive), or a held key is gone
-- or holds another value. What is left of this session is then released at once;
-- another session's key and registry are left alone.
local nonce = redis.call('GET', KEYS[1])
if nonce ~= ARGV[3] then
  if not nonce then
    release_all(KEYS[2])
  end
  return 0
end
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[4]) then
  release_all(KEYS[2])
  redis.call('DEL', KEYS[1])
  return 0
end
local held = {}
if KEYS[2] then
  held = redis.call('HGETALL', KEYS[2])
end
for i = 1, #held, 2 do
  if redis.call('GET', held[i]) ~= held[i + 1] then
    release_all(KEYS[2])
    redis.call('DEL', KEYS[1])
    return 0
  end
end
for i = 1, #held, 2 do
  redis.call('PEXPIRE', held[i], ARGV[2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if #held > 0 then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return 1
