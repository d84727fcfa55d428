-- Commits an STM attempt if its checks hold.
-- KEYS[1]: the revision counter, then the n checked keys, then the written keys.
-- ARGV: channel prefix, n, then per checked key: op (le|eq) and a revision (its mod
-- revision must be <= or == it), then per written key: "p" and the value, or "d".
-- Returns 1 when applied (all writes at one new revision), 0 on conflict.
local ncheck = tonumber(ARGV[2])
local a = 3
for i = 1, ncheck do
  local op, n = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
  local r = tonumber(redis.call('HGET', KEYS[1 + i], 'r') or '0')
  if (op == 'le' and r > n) or (op == 'eq' and r ~= n) then
    return 0
  end
end
if #KEYS == 1 + ncheck then
  return 1
end
local rev = redis.call('INCR', KEYS[1])
for i = 2 + ncheck, #KEYS do
  local op = ARGV[a]
  a = a + 1
  if op == 'p' then
    redis.call('HSET', KEYS[i], 'v', ARGV[a], 'r', rev)
    a = a + 1
  elseif redis.call('HEXISTS', KEYS[i], 'v') == 1 then
    redis.call('HDEL', KEYS[i], 'v')
    redis.call('HSET', KEYS[i], 'r', rev)
  end
end
return 1
