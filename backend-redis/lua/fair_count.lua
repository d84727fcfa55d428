-- Counts the live entries of a fair queue (holders and waiters); read-only.
-- ARGV: channel prefix (unused), p.
-- An entry whose key is gone (its session expired) is not counted: the grant script
-- would forget it on its next pass.
local p = ARGV[2]
local n = 0
for _, id in ipairs(redis.call('ZRANGE', p .. ':q', 0, -1)) do
  if redis.call('EXISTS', p .. ':e:' .. id) == 1 then
    n = n + 1
  end
end
return n
