-- Reads who holds what (distsync status) at one instant; read-only.
-- ARGV: channel prefix, the session keys' prefix "{<ns>session:" ('' under Redis
-- Cluster, where each session key lies in a slot of its own, which no script here may
-- read: the client reads their PTTL itself), then pairs (what, p):
--   line    p = "{<ns><name>}:<kind>" of a waiter line (lock, rw, elect, sem): returns
--           {permit count or '', then per entry of p:q in arrival order: its id, the
--           entry key's value ('' once it expired), its grant's token in p:g ('' while
--           waiting), its election value in p:v (''), the PTTL of its session's key
--           (see session_pttl; '' without a session keys' prefix)}; a lock's unfair
--           side (see unfair_mine in lib.lua) follows as entries too: its holder p:u
--           (id, value "u<id>:<token>", token, '', PTTL), then its waiters of p:uq
--           whose marker lives (id, "u<id>", '', '', PTTL)
--   queue   p = "{<ns><name>}:queue": {ready, in flight}: ready = ZCARD p:items plus
--           the received items of p:held whose hold key is gone; in flight = HLEN
--           p:inflight plus the received items whose hold key lives
--   barrier p = the barrier's key: {EXISTS p}
--   dbar    p = "{<ns><name>}:dbar": {live participants, EXISTS p:ready}
--   counter p = the counter's key: {its value ('0' when gone)}
--   latch   p = the latch's hash: {initial, remaining} ('' when gone)
--   limit   p = the rate limiter's hash: {tat, rate fingerprint, TIME seconds, TIME
--           microseconds} ('' for a field that is gone): the next due time is
--           computed on the server's clock, read in the same instant
-- Returns one answer per pair, in order.
local sessions = ARGV[2]
local pttls = {}
-- The PTTL of the key of the session an entry id "<session id>.<n>" is held through
-- (-2 once it is gone), read once per session and call; '' when the call reads none.
local function session_pttl(id)
  local session = string.match(id, '^(%d+)%.')
  if sessions == '' or not session then
    return ''
  end
  if pttls[session] == nil then
    pttls[session] = redis.call('PTTL', sessions .. session .. '}')
  end
  return pttls[session]
end
local out = {}
for i = 3, #ARGV - 1, 2 do
  local what, p = ARGV[i], ARGV[i + 1]
  local answer
  if what == 'line' then
    answer = {redis.call('GET', p .. ':n') or ''}
    for _, id in ipairs(redis.call('ZRANGE', p .. ':q', 0, -1)) do
      answer[#answer + 1] = id
      answer[#answer + 1] = redis.call('GET', p .. ':e:' .. id) or ''
      answer[#answer + 1] = redis.call('HGET', p .. ':g', id) or ''
      answer[#answer + 1] = redis.call('HGET', p .. ':v', id) or ''
      answer[#answer + 1] = session_pttl(id)
    end
    if string.sub(p, -5) == ':lock' then
      local hold = redis.call('GET', p .. ':u')
      local id, token = string.match(hold or '', '^u(.+):(%d+)$')
      if id then
        answer[#answer + 1] = id
        answer[#answer + 1] = hold
        answer[#answer + 1] = token
        answer[#answer + 1] = ''
        answer[#answer + 1] = session_pttl(id)
      end
      for _, waiter in ipairs(redis.call('ZRANGE', p .. ':uq', 0, -1)) do
        if redis.call('EXISTS', p .. ':um:' .. waiter) == 1 then
          answer[#answer + 1] = waiter
          answer[#answer + 1] = 'u' .. waiter
          answer[#answer + 1] = ''
          answer[#answer + 1] = ''
          answer[#answer + 1] = session_pttl(waiter)
        end
      end
    end
  elseif what == 'queue' then
    -- A received item is in flight while its hold key lives; once the receiver's
    -- session has ended it is ready again (the next sweep puts it back).
    local ready, in_flight = redis.call('ZCARD', p .. ':items'), redis.call('HLEN', p .. ':inflight')
    for _, cid in ipairs(redis.call('HKEYS', p .. ':held')) do
      if redis.call('EXISTS', p .. ':e:' .. cid) == 1 then
        in_flight = in_flight + 1
      else
        ready = ready + 1
      end
    end
    answer = {ready, in_flight}
  elseif what == 'barrier' then
    answer = {redis.call('EXISTS', p)}
  elseif what == 'dbar' then
    local live = 0
    for _, id in ipairs(redis.call('ZRANGE', p .. ':p', 0, -1)) do
      live = live + redis.call('EXISTS', p .. ':e:' .. id)
    end
    answer = {live, redis.call('EXISTS', p .. ':ready')}
  elseif what == 'counter' then
    answer = {redis.call('GET', p) or '0'}
  elseif what == 'latch' then
    local fields = redis.call('HMGET', p, 'initial', 'remaining')
    answer = {fields[1] or '', fields[2] or ''}
  elseif what == 'limit' then
    local fields = redis.call('HMGET', p, 'tat', 'rate')
    local time = redis.call('TIME')
    answer = {fields[1] or '', fields[2] or '', time[1], time[2]}
  else
    answer = {}
  end
  out[#out + 1] = answer
end
return out
