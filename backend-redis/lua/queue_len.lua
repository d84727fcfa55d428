-- Counts the queued items: those in p:items and those held through a session that
-- has ended (their hold key is gone) but not yet put back. ARGV: channel prefix, p.
local p = ARGV[2]
local n = redis.call('ZCARD', p .. ':items')
for _, cid in ipairs(redis.call('HKEYS', p .. ':held')) do
  if redis.call('EXISTS', p .. ':e:' .. cid) == 0 then
    n = n + 1
  end
end
return n
