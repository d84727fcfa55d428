-- Writes an STM key only while a lock hold is still the current grant (a guarded write,
-- LockGuard::put_if_held).
-- KEYS[1]: the hold's entry key "p:e:<id>", KEYS[2]: the STM revision counter,
-- KEYS[3]: the STM key.
-- ARGV: channel prefix, the entry's expected value, the grant's fencing token (its
-- digits), the value to write.
-- The hold's check is hold_current (lib.lua). While the hold is current, the STM key is
-- written as a commit of stm_commit.lua does (value and the next STM revision) and 1 is
-- returned; otherwise nothing is written and 0 is returned.
if not hold_current(KEYS[1], ARGV[2], ARGV[3]) then
  return 0
end
local rev = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[3], 'v', ARGV[4], 'r', rev)
return 1
