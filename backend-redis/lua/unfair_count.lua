-- Counts the contenders of a lock's unfair side and its fair line; read-only.
-- KEYS[1]: p (declared for Redis Cluster's routing, unread). ARGV: channel prefix, p.
-- Returns the live unfair holder (p:u), the waiters of p:uq whose marker lives, and the
-- live entries of the fair line p:q (fq_live in lib.lua).
local p = ARGV[2]
local n = redis.call('EXISTS', p .. ':u')
for _, id in ipairs(redis.call('ZRANGE', p .. ':uq', 0, -1)) do
  n = n + redis.call('EXISTS', p .. ':um:' .. id)
end
return n + fq_live(p)
