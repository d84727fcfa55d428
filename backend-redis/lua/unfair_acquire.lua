-- Takes, tries or re-checks a lock's unfair hold (src/unfair_lock.rs; the layout is in
-- lib.lua, above unfair_mine).
-- KEYS[1]: the holder key p:u, KEYS[2]: the promotion record (in KEYS[1]'s hash slot,
-- see promotion_left in lib.lua), KEYS[3]: session key, KEYS[4]: session registry;
-- under Redis Cluster only KEYS[1] and KEYS[2] (see session_left in lib.lua).
-- ARGV: channel prefix, the acquisition's id, ttl ms, how (take|try|check), margin ms,
-- session nonce (under Redis Cluster: the client's bound on the session's time left,
-- ms), then as fair_acquire.lua takes them: the longest session TTL any client may use
-- (ms, 0 when not bounded), whether the client watches for failovers ('1' or '0'), the
-- server's replication id as the client read it ('' when it does not know); then the
-- wake id of the locker handle (the value of the marker p:um:<id>, naming the channel
-- p:uw:<wake id> a release wakes the waiter on). The lock's prefix p is KEYS[1]
-- without its ':u'.
-- Returns {1, token} when the acquisition holds: p:u = "u<id>:<token>", with the PX of
-- an entry key (session_px), listed in the session's registry, the token the next value
-- of p:fence, the fair lock's counter. Returns {0, ms} when it does not: a try is
-- refused (ms 0, nothing written); a take or a check waits in the wait line p:uq (its
-- marker p:um:<id> set again) and asks again when woken or after ms at the latest (what
-- is left of the holder's TTL, of the fair line's holders' shortest, or of the
-- lock-delay). Returns {-1} when the session is gone or has less than the margin left
-- (as fair_acquire.lua), the acquisition then let go.
--
-- The lock is free when nobody holds p:u, the fair line p:q has no live entry (unfair
-- contenders wait behind it; fq_settle first grants its live head, if any) and the
-- epoch marker allows grants (the lock-delay after the store forgot: epoch_wait in
-- lib.lua, as for the fair lock). Arrival does not count: a newcomer takes a free lock
-- before the waiters do.
--
-- The script runs in two parts (see `compose` in src/scripts.rs): the first grants a
-- take or try of a free lock whose marker allows grants, the common case, with only
-- the few library definitions it uses; the second does everything else, as if the
-- first part were not there.
local p = string.sub(KEYS[1], 1, -3)
if ARGV[4] ~= 'check' then
  local skey = KEYS[3]
  local left = session_left(skey, ARGV[6], ARGV[5])
  if not left then
    return {-1}
  end
  -- The marker is read and made persistent in one command where the server has GETEX
  -- (Redis 6.2), as in fair_acquire.lua.
  local getex = (redis.REDIS_VERSION_NUM or 0) >= 0x060200
  local m
  if getex then
    m = redis.call('GETEX', p .. ':epoch', 'PERSIST')
  else
    m = redis.call('GET', p .. ':epoch')
  end
  local rid = ARGV[9]
  if (m == '0' and ARGV[8] ~= '1') or (m == '0:' .. rid and string.match(rid, '^%x+$')) then
    -- No holder and an empty fair line: one EXISTS for both.
    if redis.call('EXISTS', KEYS[1], p .. ':q') == 0 then
      local token = counter_next(p .. ':fence', FAIR_IDLE_MS)
      local hold = 'u' .. ARGV[2] .. ':' .. decimal(token)
      redis.call('SET', KEYS[1], hold, 'PX', session_px(skey, left, ARGV[3]))
      session_list(KEYS[4], KEYS[1], hold, left)
      if not getex then
        redis.call('PERSIST', p .. ':epoch')
      end
      return {1, token}
    end
  end
end
-- @cold
local ukey, skey, reg = KEYS[1], KEYS[3], KEYS[4]
local id, ttl, how = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local val = 'u' .. id
-- A re-check after a grant whose reply was lost finds the acquisition holding.
local cur = redis.call('GET', ukey)
if unfair_mine(cur, val) then
  return {1, tonumber(string.sub(cur, #val + 2))}
end
local left = session_left(skey, ARGV[6], ARGV[5])
if not left then
  unfair_let_go(p, val)
  return {-1}
end
-- The lock-delay after the store forgot the lock, as in fair_acquire.lua.
local watch, rid = ARGV[8] == '1', ARGV[9]
local delay, marked_by = epoch_wait(p, rid)
if delay >= 0 and watch and marked_by == '' then
  redis.call('SET', p .. ':epoch', redis.call('GET', p .. ':epoch') .. ':' .. replid(rid))
end
if delay < 0 then
  delay = epoch_start(p, tonumber(ARGV[7]) or 0, watch, rid, KEYS[2])
end
redis.call('PERSIST', p .. ':epoch')
local free = delay == 0 and not cur
if free and redis.call('EXISTS', p .. ':q') == 1 then
  -- The fair line goes first: settling it forgets its dead entries and grants (and
  -- wakes) its live head; only a line left empty lets this acquisition in.
  fq_settle(p, nil, rid)
  free = redis.call('EXISTS', p .. ':q') == 0
end
if free then
  local token = counter_next(p .. ':fence', FAIR_IDLE_MS)
  local hold = val .. ':' .. decimal(token)
  redis.call('SET', ukey, hold, 'PX', session_px(skey, left, ttl))
  session_list(reg, ukey, hold, left)
  redis.call('ZREM', p .. ':uq', id)
  redis.call('DEL', p .. ':um:' .. id)
  return {1, token}
end
if how == 'try' then
  return {0, 0}
end
-- When to ask again if no wake-up comes: once the lock-delay is over, or the holder's
-- TTL (the unfair holder's, else the shortest of the fair line's holders') has run out,
-- the earliest moment the lock can be free without a release.
local soonest = delay
if soonest == 0 then
  soonest = ttl
  local t = redis.call('PTTL', ukey)
  if t >= 0 then
    soonest = t
  else
    for _, h in ipairs(redis.call('HKEYS', p .. ':g')) do
      t = redis.call('PTTL', p .. ':e:' .. h)
      if t >= 0 and t < soonest then
        soonest = t
      end
    end
  end
end
-- Behind the fair line, which then ends with UNFAIR_BEHIND (see lib.lua): its last
-- release wakes the head of the wait line.
if not cur and redis.call('EXISTS', p .. ':q') == 1 then
  redis.call('ZADD', p .. ':q', '+inf', UNFAIR_BEHIND)
end
-- In line (arrival order among the waiters, kept by NX across re-checks), the marker
-- living until a TTL after that moment: a waiter that stops asking drops out.
local px = soonest + ttl
local q = p .. ':uq'
local now = redis.call('TIME')
redis.call('ZADD', q, 'NX', tonumber(now[1]) * 1000000 + tonumber(now[2]), id)
if redis.call('PTTL', q) < px then
  redis.call('PEXPIRE', q, px)
end
redis.call('SET', p .. ':um:' .. id, ARGV[10], 'PX', px)
return {0, soonest}
