-- Lowers a barrier and wakes its waiters. KEYS[1]: the barrier key.
-- ARGV: channel prefix.
redis.call('DEL', KEYS[1])
publish(KEYS[1] .. ':ch', 'released')
return 1
