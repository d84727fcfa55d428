-- Appends an item and wakes one waiting consumer.
-- ARGV: channel prefix, p, priority, item.
local p = ARGV[2]
local seq = redis.call('INCR', p .. ':seq')
redis.call('ZADD', p .. ':items', ARGV[3], string.format('%016x', seq) .. ARGV[4])
queue_wake(p)
return 1
