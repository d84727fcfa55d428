-- Receives the first item (at least once): holds it through a session under the call
-- id, or registers the call as a waiting consumer.
-- KEYS[1]: the hold's key p:e:<call id>, KEYS[2]: session key, KEYS[3]: its registry;
-- under Redis Cluster only KEYS[1] (see session_left in lib.lua).
-- ARGV: channel prefix, p, call id, how (try|wait), marker ttl ms, session nonce (under
-- Redis Cluster: the client's bound on the session's time left, ms), margin ms, the
-- session's TTL ms, stale claim ms.
-- Returns {1, item, earlier deliveries, record} when held; {0, ms} when there is none
-- (ms as in queue_pop.lua); {-1} when the session is gone or past its margin (see
-- fair_acquire.lua). Retrying a call id whose hold is alive returns the same item.
local ekey, skey, reg = KEYS[1], KEYS[2], KEYS[3]
local p, cid = ARGV[2], ARGV[3]
local items = p .. ':items'
local val = 'q' .. cid
local rec = redis.call('HGET', p .. ':held', cid)
if rec and redis.call('GET', ekey) == val then
  -- A retry of a call whose reply was lost: the same item again. Under Redis Cluster
  -- its hold lives one TTL from this run, as from a first receive (session_px in
  -- lib.lua): the client's renewals did not renew it while no reply had listed it.
  if not skey then
    redis.call('PEXPIRE', ekey, ARGV[8])
  end
  local member = string.sub(rec, 6)
  local n = tonumber(redis.call('HGET', p .. ':dc', member)) or 1
  return {1, string.sub(member, 17), n - 1, rec}
end
if queue_cancelled(p, cid) then
  return {0, -1}
end
local left = session_left(skey, ARGV[6], ARGV[7])
if not left then
  return {-1}
end
local soonest = queue_sweep(p, tonumber(ARGV[9]))
local top = redis.call('ZPOPMIN', items)
if #top > 0 then
  rec = string.format('%05d', tonumber(top[2])) .. top[1]
  redis.call('HSET', p .. ':held', cid, rec)
  redis.call('SET', ekey, val, 'PX', session_px(skey, left, ARGV[8]))
  session_list(reg, ekey, val, left)
  local n = redis.call('HINCRBY', p .. ':dc', top[1], 1)
  redis.call('DEL', p .. ':wm:' .. cid)
  redis.call('ZREM', p .. ':waiters', cid)
  if redis.call('ZCARD', items) > 0 then
    queue_wake(p)
  end
  return {1, string.sub(top[1], 17), n - 1, rec}
end
if ARGV[4] == 'wait' then
  redis.call('SET', p .. ':wm:' .. cid, '1', 'PX', ARGV[5])
  redis.call('ZADD', p .. ':waiters', 'NX', redis.call('INCR', p .. ':seq'), cid)
end
return {0, soonest}
