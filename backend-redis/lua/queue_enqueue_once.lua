-- Appends an item unless its idempotency record exists, and wakes one waiting consumer.
-- The record `p:k:<key>` (in the queue's hash slot: `p` carries its hash tag) is set
-- with NX and PX in the same script, so the check, the record and the append are one
-- atomic step.
-- ARGV: channel prefix, p, priority, item, key (`u:<user key>` or `g:<call id>`),
-- this call's id, the record's lifetime in ms.
-- Returns 1 appended, 2 appended by an earlier attempt of this call, 0 a duplicate.
local p = ARGV[2]
local record = p .. ':k:' .. ARGV[5]
if not redis.call('SET', record, ARGV[6], 'NX', 'PX', ARGV[7]) then
  if redis.call('GET', record) == ARGV[6] then
    return 2
  end
  return 0
end
local seq = string.format('%016x', redis.call('INCR', p .. ':seq'))
redis.call('ZADD', p .. ':items', ARGV[3], seq .. ARGV[4])
redis.call('HSET', p .. ':et', seq, queue_now())
queue_wake(p)
return 1
