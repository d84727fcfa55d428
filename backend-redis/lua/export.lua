-- Reads, at one instant, the keys a migration export found by SCAN (see src/export.rs).
-- KEYS: the keys. ARGV: channel prefix (unused).
-- Returns one array per key, by the key's type:
--   zset:   {'zset', {member, score, member, score, ...}} in ZRANGE (dequeue) order
--   hash:   {'hash', field count, 1 if it has the field r else 0, the field v or nil,
--           every value if it has no field r (a queue's records), else {}}
--   string: {'string', value}
--   else:   {type} (e.g. 'none' for a key deleted since the scan)
local out = {}
for i = 1, #KEYS do
  local k = KEYS[i]
  local t = redis.call('TYPE', k).ok
  if t == 'zset' then
    out[i] = {t, redis.call('ZRANGE', k, 0, -1, 'WITHSCORES')}
  elseif t == 'hash' then
    local revision = redis.call('HEXISTS', k, 'r')
    local values = {}
    if revision == 0 then
      values = redis.call('HVALS', k)
    end
    out[i] = {t, redis.call('HLEN', k), revision, redis.call('HGET', k, 'v'), values}
  elseif t == 'string' then
    out[i] = {t, redis.call('GET', k)}
  else
    out[i] = {t}
  end
end
return out
