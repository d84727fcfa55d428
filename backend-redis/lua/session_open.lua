-- Opens a session. KEYS[1]: the session counter.
-- ARGV: channel prefix, session key prefix ("{<ns>session:"), ttl ms.
-- Returns the new session id; its key is "<prefix><id>}".
local id = redis.call('INCR', KEYS[1])
redis.call('SET', ARGV[2] .. string.format('%d', id) .. '}', '1', 'PX', ARGV[3])
return id
