-- Leaves a double barrier, or checks whether everyone has left.
-- KEYS[1]: entry key, KEYS[2]: session registry (none under Redis Cluster).
-- ARGV: channel prefix, p, id, how (leave|check), generation seen at leave (check).
-- Returns {1} when every participant has left, else {0, generation, ms}: ms is the
-- shortest TTL among the remaining entries (when to re-check if no wake-up comes).
local ekey, reg = KEYS[1], KEYS[2]
local p, id, how = ARGV[2], ARGV[3], ARGV[4]
local gen = tonumber(redis.call('GET', p .. ':gen') or '0')
if how == 'leave' then
  session_unlist(reg, ekey)
  redis.call('DEL', ekey)
  redis.call('ZREM', p .. ':p', id)
elseif gen ~= tonumber(ARGV[5]) then
  return {1}
end
local n, soonest = dbar_live(p)
if n == 0 then
  dbar_done(p)
  return {1}
end
return {0, gen, soonest}
