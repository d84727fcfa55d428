-- Counts the contenders of a waiter line and, for a lock, of its unfair side (holder
-- and waiters of either side); read-only. Both lockers of a lock count with it.
-- KEYS[1]: p (declared for Redis Cluster's routing, unread). ARGV: channel prefix, p.
-- See lock_contenders in lib.lua.
return lock_contenders(ARGV[2])
