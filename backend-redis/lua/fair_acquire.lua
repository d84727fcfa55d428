-- Joins, re-checks or tries a waiter line (lock, rwlock, election, semaphore).
-- KEYS[1]: entry key, KEYS[2]: the promotion record (in KEYS[1]'s hash slot, see
-- promotion_left in lib.lua), KEYS[3]: session key, KEYS[4]: session registry; under
-- Redis Cluster only KEYS[1] and KEYS[2] (see session_left in lib.lua).
-- ARGV: channel prefix, p, id, mode (w|r|s), ttl ms, how (wait|try|check), margin ms,
-- session nonce (under Redis Cluster: the client's bound on the session's time left,
-- ms), the longest session TTL any client may use (ms, 0 when not bounded: see
-- epoch_start in lib.lua), whether the client watches for failovers ("1": it fails
-- over without replica acknowledgement, see epoch_start; else "0"), the server's
-- replication id as the client read it on this connection ('' when it does not know
-- it: see replid in lib.lua), value (elections) or permit count (semaphores,
-- decimal).
-- Returns {1, token} when granted; {0, ms} when waiting, ms being the shortest TTL among
-- the holders, or what is left of the lock-delay after the store forgot the line
-- (when to re-check if no wake-up comes); {0, 0} when a try fails;
-- {-2, count} when joining a semaphore in use with another permit count; {-1}
-- when the session (or this entry) is gone, or when joining finds the session key
-- holding another nonce (another session's, see keepalive.lua) or less than the
-- margin left of the session key's TTL (past the owner's client-side deadline, as in
-- keepalive.lua). A new entry expires with the session key (PX = its PTTL) until the
-- next renewal gives both the full TTL; under Redis Cluster it lives one TTL from this
-- run (see session_px in lib.lua).
--
-- A lock's unfair holder (p:u, see src/unfair_lock.rs) is a holder ahead of the whole
-- line: while it lives nothing is granted, and a waiter re-checks by its TTL too.
--
-- The script runs in two parts (see `compose` in src/scripts.rs): the first grants a
-- lock or read-write lock whose line is empty and whose marker allows grants, the
-- common case, with only the few library definitions it uses; everything else runs
-- in the second, the whole protocol, as if the first part were not there.
local p, id, mode = ARGV[2], ARGV[3], ARGV[4]
if ARGV[6] ~= 'check' and string.sub(p, -6) ~= ':elect' and string.sub(p, -4) ~= ':sem' then
  -- A join or try of a session that is gone is answered as the second part would
  -- answer it, before anything is read or written for the line (the next live join
  -- sets a missing marker, see epoch_start).
  local skey = KEYS[3]
  local left = session_left(skey, ARGV[8], ARGV[7])
  if not left then
    return {-1}
  end
  -- The marker lives while the line does (an idle line lets it expire): from here on
  -- the session joins or takes the line, in this part or the second, which both
  -- persist it. GETEX (Redis 6.2) reads and persists it in one command; on an older
  -- server, GET here and PERSIST at the grant.
  local getex = (redis.REDIS_VERSION_NUM or 0) >= 0x060200
  local m
  if getex then
    m = redis.call('GETEX', p .. ':epoch', 'PERSIST')
  else
    m = redis.call('GET', p .. ':epoch')
  end
  -- Grants are allowed without a lock-delay, the marker needs no update, and no INFO
  -- is needed: "0" on a line nobody watches, or "0:<rid>" naming the replication id
  -- the client gave. Otherwise, the second part.
  local rid = ARGV[11]
  if (m == '0' and ARGV[10] ~= '1') or (m == '0:' .. rid and string.match(rid, '^%x+$')) then
    -- An empty line, and (a lock) no unfair holder: one EXISTS for both.
    if redis.call('EXISTS', p .. ':q', p .. ':u') == 0 then
      local ekey, val = KEYS[1], mode .. id
      redis.call('SET', ekey, val, 'PX', session_px(skey, left, ARGV[5]))
      session_list(KEYS[4], ekey, val, left)
      if not getex then
        redis.call('PERSIST', p .. ':epoch')
      end
      return fq_grant_alone(p, id, mode)
    end
  end
end
-- @cold
local ekey, skey, reg = KEYS[1], KEYS[3], KEYS[4]
local p, id, mode, ttl, how = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local val = mode .. id
local elect = string.sub(p, -6) == ':elect'
local sem = string.sub(p, -4) == ':sem'
-- The lock-delay after the store forgot the line (epoch_wait, epoch_start in lib.lua):
-- while it runs, nobody is granted; waiters re-check when it ends.
local watch = ARGV[10] == '1'
local rid = ARGV[11]
local delay, marked_by = epoch_wait(p, rid)
if delay >= 0 and watch and marked_by == '' then
  -- A line marked before any watching client came: from now on it is watched.
  redis.call('SET', p .. ':epoch', redis.call('GET', p .. ':epoch') .. ':' .. replid(rid))
end
if delay < 0 then
  delay = epoch_start(p, tonumber(ARGV[9]) or 0, watch, rid, KEYS[2])
end
if how == 'check' then
  if redis.call('GET', ekey) ~= val then
    release_hold(ekey, val)
    return {-1}
  end
else
  local left = session_left(skey, ARGV[8], ARGV[7])
  if not left then
    return {-1}
  end
  if sem then
    local other = sem_agree(p, ARGV[12])
    if other then
      return {-2, tonumber(other)}
    end
  end
  redis.call('SET', ekey, val, 'PX', session_px(skey, left, ttl))
  session_list(reg, ekey, val, left)
  -- The marker lives while the line does (an idle line lets it expire).
  redis.call('PERSIST', p .. ':epoch')
  if delay == 0 and not elect and not sem and redis.call('EXISTS', p .. ':q', p .. ':u') == 0 then
    return fq_grant_alone(p, id, mode)
  end
  redis.call('ZADD', p .. ':q', redis.call('INCR', p .. ':seq'), id)
  redis.call('PERSIST', p .. ':seq')
  if elect then
    redis.call('HSET', p .. ':v', id, ARGV[12])
  end
end
-- This entry learns of its own grant from the reply: no wake-up for it.
fq_settle(p, id, rid)
local token = redis.call('HGET', p .. ':g', id)
if (not token) and how == 'try' then
  redis.call('DEL', ekey)
  session_unlist(reg, ekey)
  fq_forget(p, id)
  return {0, 0}
end
if elect then
  elect_sync(p)
end
if token then
  return {1, tonumber(token)}
end
if delay > 0 then
  return {0, delay}
end
local soonest = tonumber(ttl)
-- A lock's unfair holder (see fq_settle) is one of them.
local unfair = redis.call('PTTL', p .. ':u')
if unfair >= 0 and unfair < soonest then
  soonest = unfair
end
for _, h in ipairs(redis.call('HKEYS', p .. ':g')) do
  local t = redis.call('PTTL', p .. ':e:' .. h)
  if t >= 0 and t < soonest then
    soonest = t
  end
end
return {0, soonest}
