-- Reads STM keys at one instant. KEYS[1]: the revision counter, then the keys.
-- ARGV: channel prefix.
-- Returns {revision, then for each key: its mod revision (0 if never written), its
-- value or nil}.
local out = {tonumber(redis.call('GET', KEYS[1]) or '0')}
for i = 2, #KEYS do
  local h = redis.call('HMGET', KEYS[i], 'r', 'v')
  out[#out + 1] = tonumber(h[1] or '0')
  out[#out + 1] = h[2]
end
return out
