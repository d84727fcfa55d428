-- Undoes a cancelled dequeue or receive call: puts back an item it popped or held but
-- never returned (at its place: same priority, same arrival number; a held item's
-- delivery is not counted), withdraws it as a waiter, and passes on a wake-up it may
-- have consumed, and leaves a tombstone so that the call takes nothing afterwards
-- (queue_cancelled in lib.lua). ARGV: channel prefix, p, call id, the session registry
-- of a receive call (or ""). Returns 1 if an item was put back.
local p, cid, reg = ARGV[2], ARGV[3], ARGV[4]
local back = 0
local popped = redis.call('HGET', p .. ':inflight', cid)
if popped then
  redis.call('HDEL', p .. ':inflight', cid)
  queue_restore(p, popped)
  back = 1
end
redis.call('ZREM', p .. ':ift', cid)
local held = redis.call('HGET', p .. ':held', cid)
if held then
  local ekey = p .. ':e:' .. cid
  redis.call('DEL', ekey)
  if reg ~= '' then
    redis.call('HDEL', reg, ekey)
  end
  local member = string.sub(held, 6)
  if redis.call('HINCRBY', p .. ':dc', member, -1) <= 0 then
    redis.call('HDEL', p .. ':dc', member)
  end
  redis.call('HDEL', p .. ':held', cid)
  queue_restore(p, held)
  back = 1
end
redis.call('DEL', p .. ':wm:' .. cid)
redis.call('ZREM', p .. ':waiters', cid)
-- The call takes nothing from now on, should a copy of its pop or receive still come.
redis.call('SET', p .. ':cx:' .. cid, '1', 'PX', QUEUE_CANCELLED_MS)
if redis.call('ZCARD', p .. ':items') > 0 then
  queue_wake(p)
end
return back
