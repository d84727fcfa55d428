-- Undoes a cancelled dequeue call: puts back an item it popped but never returned (at
-- its place: same priority, same arrival number), withdraws it as a waiter, and passes
-- on a wake-up it may have consumed. ARGV: channel prefix, p, call id.
-- Returns 1 if an item was put back.
local p, cid = ARGV[2], ARGV[3]
local held = redis.call('HGET', p .. ':inflight', cid)
if held then
  redis.call('HDEL', p .. ':inflight', cid)
  redis.call('ZADD', p .. ':items', tonumber(string.sub(held, 1, 5)), string.sub(held, 6))
end
redis.call('DEL', p .. ':wm:' .. cid)
redis.call('ZREM', p .. ':waiters', cid)
if redis.call('ZCARD', p .. ':items') > 0 then
  queue_wake(p)
end
if held then
  return 1
end
return 0
