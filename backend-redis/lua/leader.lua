-- Reads an election's leader (forgetting dead candidates first).
-- ARGV: channel prefix, p.
-- Returns {ver} without a leader, else {ver, term, key, value, pttl of the leader's key}.
local p = ARGV[2]
fq_settle(p)
elect_sync(p)
local ver = tonumber(redis.call('GET', p .. ':ver') or '0')
local id, term = elect_leader(p)
if not id then
  return {ver}
end
local key = p .. ':e:' .. id
return {ver, tonumber(term), key, redis.call('HGET', p .. ':v', id) or '', redis.call('PTTL', key)}
