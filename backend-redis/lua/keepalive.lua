-- Renews a session and everything held through it, in one round trip.
-- KEYS[1]: session key, KEYS[2]: its registry (entry key -> expected value).
-- ARGV: channel prefix, ttl ms, nonce (the session key's value), margin ms, and
-- 'cluster' under Redis Cluster, where the held keys live in other slots: the
-- registry is then only renewed (the client renews the held keys slot by slot with
-- keepalive_held.lua, and releases them).
-- Returns 1 when renewed. Returns 0 when the session key is gone, holds another nonce
-- (another session's key: the server lost this one, e.g. in a restart, and the id was
-- taken again), has less than the margin left of its TTL (the renewal arrives after
-- the owner's client-side deadline: see RedisLease::keep_alive), or a held key is gone
-- or holds another value. What is left of this session is then released at once
-- (on one server); another session's key and registry are left alone.
local reg = KEYS[2]
-- The registry whose keys this script may read and release: none under Cluster.
local own = reg
if ARGV[5] == 'cluster' then
  own = nil
end
local nonce = redis.call('GET', KEYS[1])
if nonce ~= ARGV[3] then
  if not nonce then
    release_all(own)
  end
  return 0
end
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[4]) then
  release_all(own)
  redis.call('DEL', KEYS[1])
  return 0
end
local held = {}
if own then
  held = redis.call('HGETALL', own)
end
for i = 1, #held, 2 do
  if redis.call('GET', held[i]) ~= held[i + 1] then
    release_all(own)
    redis.call('DEL', KEYS[1])
    return 0
  end
end
for i = 1, #held, 2 do
  redis.call('PEXPIRE', held[i], ARGV[2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if reg and (#held > 0 or not own) then
  redis.call('PEXPIRE', reg, ARGV[2])
end
return 1
