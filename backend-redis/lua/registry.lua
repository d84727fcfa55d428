-- Lists or unlists a key held through a session in the session's registry, under
-- Redis Cluster (on one server the script that takes or lets go of the key does it),
-- so that a revoke from any client finds what the session holds.
-- KEYS[1]: the session registry. ARGV: channel prefix, 'add' or 'del', the held key,
-- its value (add), the session's TTL in ms (add: the registry lives as long as the
-- session key, and is renewed with it by keepalive.lua).
if ARGV[2] == 'add' then
  redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
else
  redis.call('HDEL', KEYS[1], ARGV[3])
end
return 1
