-- Renews a session and everything held through it, in one round trip.
-- KEYS[1]: session key, KEYS[2]: its registry (entry key -> expected value).
-- ARGV: channel prefix, ttl ms.
-- Returns 1 when renewed. Returns 0 when the session key is gone or a held key is gone
-- or holds another value; what is left of the session is then released at once.
if redis.call('EXISTS', KEYS[1]) == 0 then
  release_all(KEYS[2])
  return 0
end
local held = redis.call('HGETALL', KEYS[2])
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
