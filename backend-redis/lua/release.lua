-- Releases one session-held entry. KEYS[1]: entry key, KEYS[2]: session registry.
-- ARGV: channel prefix, expected value. Returns 1 if it was still held, else 0.
redis.call('HDEL', KEYS[2], KEYS[1])
return release_hold(KEYS[1], ARGV[2])
