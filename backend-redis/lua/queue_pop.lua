-- Pops the first item into p:inflight under the call id (at most once), or registers
-- the call as a waiting consumer. ARGV: channel prefix, p, call id, how (try|wait),
-- marker ttl ms, stale claim ms. Returns {1, item} or {0, ms}, ms being how long until
-- an item may come back without a wake-up (a hold's TTL, a claim going stale; -1:
-- none). Retrying a call id returns the item it popped, if any. Items of ended holds
-- and stale claims are put back first (queue_sweep).
local p, cid = ARGV[2], ARGV[3]
local items = p .. ':items'
local held = redis.call('HGET', p .. ':inflight', cid)
if held then
  -- A retry of a call whose reply was lost: the same item again.
  return {1, string.sub(held, 22)}
end
if queue_cancelled(p, cid) then
  return {0, -1}
end
local soonest = queue_sweep(p, tonumber(ARGV[6]))
local top = redis.call('ZPOPMIN', items)
if #top > 0 then
  redis.call('HSET', p .. ':inflight', cid, string.format('%05d', tonumber(top[2])) .. top[1])
  redis.call('ZADD', p .. ':ift', queue_now(), cid)
  -- An item taken at most once is gone: its delivery count with it.
  redis.call('HDEL', p .. ':dc', top[1])
  redis.call('HDEL', p .. ':et', string.sub(top[1], 1, 16))
  redis.call('DEL', p .. ':wm:' .. cid)
  redis.call('ZREM', p .. ':waiters', cid)
  if redis.call('ZCARD', items) > 0 then
    queue_wake(p)
  end
  return {1, string.sub(top[1], 17)}
end
if ARGV[4] == 'wait' then
  redis.call('SET', p .. ':wm:' .. cid, '1', 'PX', ARGV[5])
  redis.call('ZADD', p .. ':waiters', 'NX', redis.call('INCR', p .. ':seq'), cid)
end
return {0, soonest}
