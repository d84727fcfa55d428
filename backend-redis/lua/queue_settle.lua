-- Acknowledges (removes) or nacks (puts back at its place) an item held by receiver
-- call cid. KEYS[1]: the hold's key p:e:<cid>, KEYS[2]: the session registry (none
-- under Redis Cluster).
-- ARGV: channel prefix, p, call id, ack|nack, the hold's record, stale claim ms.
-- Returns 1 when the hold was this call's; 0 when it is gone and the item is in the
-- queue or held by another call (the session ended first); 2 when it is gone and so
-- is the item (an earlier ack whose reply was lost, or another consumer's).
local ekey, reg = KEYS[1], KEYS[2]
local p, cid, op, rec = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local member = string.sub(rec, 6)
if redis.call('GET', ekey) ~= 'q' .. cid then
  -- The session ended: the hold is gone (and its item goes back, if not yet).
  queue_sweep(p, tonumber(ARGV[6]))
  if redis.call('ZSCORE', p .. ':items', member) then
    return 0
  end
  for _, other in ipairs(redis.call('HVALS', p .. ':held')) do
    if other == rec then
      return 0
    end
  end
  return 2
end
redis.call('DEL', ekey)
session_unlist(reg, ekey)
if op == 'ack' then
  redis.call('HDEL', p .. ':held', cid)
  redis.call('HDEL', p .. ':dc', member)
  redis.call('HDEL', p .. ':et', string.sub(member, 1, 16))
else
  queue_unhold(p, cid)
end
return 1
