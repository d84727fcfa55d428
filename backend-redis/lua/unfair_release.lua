-- Lets go of a lock's unfair acquisition (src/unfair_lock.rs; the layout is in lib.lua,
-- above unfair_mine): its hold, or its place in the wait line.
-- KEYS[1]: the holder key p:u, KEYS[2]: session registry (none under Redis Cluster).
-- ARGV: channel prefix, the acquisition's name "u<id>" (its hold is "u<id>:<token>").
-- Returns 1 if it held (the hold is deleted and unlisted), else 0.
--
-- The script runs in two parts (see `compose` in src/scripts.rs): the first lets go of
-- a hold nobody waits for, in the unfair wait line or in the fair line (one EXISTS for
-- both), the common case: no wake-up, nothing else read. The second hands the lock on
-- (unfair_let_go: the fair line's head first, else one wake-up to the head of the wait
-- line), or withdraws a waiter.
local ukey, val = KEYS[1], ARGV[2]
local p = string.sub(ukey, 1, -3)
local cur = redis.call('GET', ukey)
if cur and string.sub(cur, 1, #val + 1) == val .. ':'
    and redis.call('EXISTS', p .. ':uq', p .. ':q') == 0 then
  redis.call('DEL', ukey)
  session_unlist(KEYS[2], ukey)
  return 1
end
-- @cold
local reg = KEYS[2]
-- The registry's entry goes if it is this acquisition's: a release retried after the
-- first one landed must not unlist the hold the session took since.
if reg and (unfair_mine(cur, val) or unfair_mine(redis.call('HGET', reg, ukey), val)) then
  session_unlist(reg, ukey)
end
return unfair_let_go(p, val)
