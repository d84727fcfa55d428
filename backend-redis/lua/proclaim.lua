-- Replaces the leader's value. KEYS[1]: the leader's entry key.
-- ARGV: channel prefix, p, id, expected entry value, new value.
-- Returns 1, or 0 when this entry is not the leader.
local p, id = ARGV[2], ARGV[3]
if redis.call('GET', KEYS[1]) ~= ARGV[4] then
  return 0
end
local leader, term = elect_leader(p)
if leader ~= id then
  return 0
end
redis.call('HSET', p .. ':v', id, ARGV[5])
elect_publish(p, id, term)
return 1
