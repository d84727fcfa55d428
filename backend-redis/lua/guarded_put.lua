-- Writes an STM key only while a lock hold is still the current grant (a guarded write,
-- LockGuard::put_if_held).
-- KEYS[1]: the hold's entry key "p:e:<id>", KEYS[2]: the STM revision counter,
-- KEYS[3]: the STM key.
-- ARGV: channel prefix, the entry's expected value, the grant's fencing token (decimal),
-- the value to write.
-- The hold is current when its entry key still holds the expected value (it expires
-- with the session, and is deleted by a release or a revoke) and the line's grant table
-- p:g still records this entry's grant with this token. Then the STM key is written as
-- a commit of stm_commit.lua does (value and the next STM revision) and 1 is returned;
-- otherwise nothing is written and 0 is returned.
local ekey = KEYS[1]
local p, id = string.match(ekey, '^(.*}:%a+):e:(.+)$')
if not p then
  return 0
end
if redis.call('GET', ekey) ~= ARGV[2] then
  return 0
end
if redis.call('HGET', p .. ':g', id) ~= ARGV[3] then
  return 0
end
local rev = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[3], 'v', ARGV[4], 'r', rev)
return 1
