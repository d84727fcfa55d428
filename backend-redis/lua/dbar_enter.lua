-- Enters a double barrier, or checks an earlier entry.
-- KEYS[1]: entry key, KEYS[2]: session key, KEYS[3]: session registry; under Redis
-- Cluster only KEYS[1] (see session_left in lib.lua).
-- ARGV: channel prefix, p, id, margin ms, count, how (enter|check), session nonce (under
-- Redis Cluster: the client's bound on the session's time left, ms), the session's TTL
-- ms.
-- Returns {1} when the barrier is ready for this entry, {0} while waiting, {-2} for a
-- participant over the count (its entry removed), {-1} when the session is gone, its
-- key holds another nonce (another session's, see keepalive.lua) or has less than the
-- margin left of its TTL (past the owner's client-side deadline, as in
-- keepalive.lua). A new entry expires with the session key until the next renewal;
-- under Redis Cluster it lives one TTL from this run (see session_px in lib.lua).
local ekey, skey, reg = KEYS[1], KEYS[2], KEYS[3]
local p, id, margin, count, how = ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local val = 'd' .. id
if how == 'check' then
  if redis.call('GET', ekey) ~= val then
    return {-1}
  end
  local mine = tonumber(redis.call('ZSCORE', p .. ':p', id) or '0')
  local ready = tonumber(redis.call('GET', p .. ':ready') or '0')
  if ready > mine then
    return {1}
  end
  return {0}
end
local left = session_left(skey, ARGV[7], margin)
if not left then
  return {-1}
end
redis.call('SET', ekey, val, 'PX', session_px(skey, left, ARGV[8]))
session_list(reg, ekey, val, left)
redis.call('ZADD', p .. ':p', redis.call('INCR', p .. ':seq'), id)
local n = dbar_live(p)
if n > count then
  redis.call('DEL', ekey)
  session_unlist(reg, ekey)
  redis.call('ZREM', p .. ':p', id)
  return {-2}
end
if n == count then
  redis.call('SET', p .. ':ready', redis.call('INCR', p .. ':seq'))
  publish(p .. ':ch', 'ready')
  return {1}
end
return {0}
