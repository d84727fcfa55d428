-- distsync: functions shared by the scripts (prepended to every script that needs them).
--
-- Convention: ARGV[1] of every script is the pub/sub channel prefix. Channels are global
-- to a Redis server (not per database), so the prefix carries the database number.
local CHP = ARGV[1]

local function publish(channel, message)
  redis.call('PUBLISH', CHP .. channel, message)
end

local function decimal(n)
  return string.format('%d', n)
end

-- The next value of a counter that must never go backwards, not even across a server
-- restart that lost it (no persistence, or a failover to a replica that had not seen
-- the last increments): fencing tokens and election change numbers. A counter that
-- does not exist (never used, expired while idle, or lost) is first set to the
-- server's clock in microseconds since the Unix epoch (TIME), then incremented (it is
-- incremented first, and seeded when that made it 1: one call, not two, when it
-- exists; a counter found at 0 is seeded too, which only moves it forward). So a
-- counter recreated at time T starts above every value it gave before, provided
--   * it was incremented less than once per microsecond on average since it was last
--     seeded (a lock grant takes a release and an acquire, each a script run: far
--     fewer than a million a second on one name), and
--   * the server's clock did not go back (across servers: their clocks agree to
--     within the time the counter was idle, or the restart took).
-- Values stay below 2^53 (until the year 2255), so Lua's numbers hold them exactly;
-- they are passed on as decimal strings. With `px` (ms), a counter seeded here expires
-- that long after (INCR keeps a TTL): a user that never gives it an idle TTL at a
-- release, as the unfair lock's, lets it go that way (a busy counter then starts again
-- from the clock, which has moved on).
local function counter_next(key, px)
  local n = redis.call('INCR', key)
  if n == 1 then
    local t = redis.call('TIME')
    local seed = t[1] .. string.format('%06d', tonumber(t[2]))
    if px then
      redis.call('SET', key, seed, 'PX', px)
    else
      redis.call('SET', key, seed)
    end
    n = redis.call('INCR', key)
  end
  return n
end

-- How long the counters of a waiter line outlive its last entry (ms): an unused name
-- leaves nothing behind for long, and a counter recreated later is seeded from the
-- clock, which has moved on.
local FAIR_IDLE_MS = 3600000

-- The replication id of this server (master_replid in INFO replication): random at
-- each start, shared by a primary and the replicas that follow it, and new on a
-- replica promoted to primary. A watched line's epoch marker records it (see
-- src/amnesia.rs). `given` is the id the client read on the connection this script
-- came on (once per connection to a primary), and is used as it is; anything else
-- ('' or nil: the client does not know it, as under Redis Cluster, or a value that is
-- no replication id) makes the script ask INFO, once per run.
local replid_asked = {}
local function replid(given)
  if given and string.match(given, '^%x+$') then
    return given
  end
  if not replid_asked.id then
    replid_asked.id = string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)') or ''
  end
  return replid_asked.id
end

-- Whether this server was promoted from a replica since it started (INFO
-- replication's second_repl_offset is -1 until then).
local function was_promoted()
  local offset = string.match(redis.call('INFO', 'replication'), 'second_repl_offset:(%-?%d+)')
  return offset ~= nil and offset ~= '-1'
end

-- The epoch marker of a waiter line, p:epoch (see src/amnesia.rs): "<at>" or, on a
-- line whose clients watch for failovers, "<at>:<rid>", rid being the replication id
-- of the server that set it, so that one GET reads both. <at> is "0" once grants are
-- allowed, else the store time (ms since the Unix epoch) before which the line grants
-- nothing. A missing marker means the store forgot the line (a restart without
-- persistence) or never knew it: nothing is granted until fair_acquire, which knows
-- the longest session TTL in use, sets it again (epoch_start). A marker of another
-- replication id means a replica was promoted, which may lack the latest grants, and
-- the line is treated as forgotten too; so is a marker that does not read as one.
-- `rid` is the client's replication id of this server, as replid takes it.
-- Returns the ms left before grants are allowed (0: now), or -1 when it is missing,
-- unreadable or set by another server; and the replication id the marker records
-- ('' for none).
local function epoch_wait(p, rid)
  local m = redis.call('GET', p .. ':epoch')
  if not m then
    return -1, ''
  end
  local at, by = string.match(m, '^(%d+):?(%x*)$')
  if not at then
    return -1, ''
  end
  if by ~= '' and by ~= replid(rid) then
    return -1, by
  end
  if at == '0' then
    return 0, by
  end
  local t = redis.call('TIME')
  local left = tonumber(at) - (tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
  if left <= 0 then
    -- Without KEEPTTL (Redis 6): the marker loses an idle TTL it had, which the
    -- line's next release that leaves it idle gives back.
    if by ~= '' then
      redis.call('SET', p .. ':epoch', '0:' .. by)
    else
      redis.call('SET', p .. ':epoch', '0')
    end
    return 0, by
  end
  return left, by
end

-- What is left (ms) of the window after this server's promotion, for a line with no
-- marker on a server promoted since it started: the old primary's holders that the
-- replica never saw were granted before the promotion, so their client-side deadlines
-- pass within max_ttl of it. Redis keeps no promotion time; the time a grant script
-- first saw the promotion is at or after it, and is recorded server-side in `key`
-- (the promotion record, see src/amnesia.rs), "<rid>:<ms>", for every client and every
-- new line: the first line to find it missing or naming another replication id (an
-- earlier promotion's) records now and waits the whole max_ttl; the later ones wait
-- what is left of it. The record has no TTL (one key per namespace, or per hash slot
-- under Redis Cluster, replaced by the next promotion): were it to expire, the next
-- new line would record now and wait the whole bound again. `rid` as replid takes it.
local function promotion_left(key, max_ttl, rid)
  local id = replid(rid)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if not key or id == '' then
    return max_ttl
  end
  local seen = string.match(redis.call('GET', key) or '', '^' .. id .. ':(%d+)$')
  if not seen then
    redis.call('SET', key, id .. ':' .. decimal(now))
    return max_ttl
  end
  return math.max(0, math.min(max_ttl, tonumber(seen) + max_ttl - now))
end

-- Sets the missing (or another server's) epoch marker of a waiter line: grants wait
-- until every session the store may have forgotten has expired on its holder's side.
-- A missing marker: max_ttl (ms, the longest session TTL any client may use) after
-- the server started; a server up for longer than that makes no one wait (the line
-- is new, or it idled out: nothing held it within a session TTL of now). A marker set
-- under another replication id (a replica promoted since, which may lack grants the
-- old primary made until it died): max_ttl from now, after the promotion. A missing
-- marker on a server promoted since it started, for watching clients (the line may be
-- one the old primary made and the replica never saw): until max_ttl after the
-- promotion was first seen (promotion_left, `promo` the promotion record's key). The
-- fencing counter is raised above the store's clock at the end of the wait, so every
-- token given after it is above every token the forgotten state gave (those were at
-- most the clock then, see counter_next), a counter the promoted replica has at an
-- older value included. With `watch` (clients that fail over without replica
-- acknowledgement) the marker records this server's replication id (`rid` as
-- replid takes it).
-- Returns the ms to wait (0: none).
local function epoch_start(p, max_ttl, watch, rid, promo)
  local delay = 0
  -- A marker exists, so it was set under another replication id (or is unreadable):
  -- the line's state may be older than what its holders were told.
  local marked_elsewhere = redis.call('EXISTS', p .. ':epoch') == 1
  if max_ttl > 0 then
    if marked_elsewhere then
      delay = max_ttl
    elseif watch and was_promoted() then
      delay = promotion_left(promo, max_ttl, rid)
    else
      -- uptime_in_seconds is the difference of two whole-second clocks, so it may
      -- count up to a second more than the server has been up: one second less of
      -- it keeps the wait from ending before the bound.
      local up = tonumber(string.match(redis.call('INFO', 'server'), 'uptime_in_seconds:(%d+)')) or 0
      delay = math.max(0, max_ttl - (up - 1) * 1000)
    end
  end
  local t = redis.call('TIME')
  local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local floor = now_us + delay * 1000
  local fence = tonumber(redis.call('GET', p .. ':fence') or '0') or 0
  if fence < floor then
    redis.call('SET', p .. ':fence', decimal(floor))
  end
  local at = '0'
  if delay > 0 then
    at = decimal(math.floor(now_us / 1000) + delay)
  end
  if watch or marked_elsewhere then
    redis.call('SET', p .. ':epoch', at .. ':' .. replid(rid))
  else
    redis.call('SET', p .. ':epoch', at)
  end
  return delay
end

-- Fair queues: locks (kind "lock"), read-write locks ("rw"), elections ("elect") and
-- semaphores ("sem").
-- Under the prefix p = "{<namespace><name>}:<kind>":
--   p:q        sorted set of entry ids, scored by arrival (p:seq)
--   p:g        hash of granted entry ids -> fencing token (0 for readers)
--   p:e:<id>   the entry key, value "<mode><id>" (mode w, r, or s for a semaphore
--              permit), PX = session TTL, listed in its session's registry and
--              renewed with it
--   p:fence    the fencing-token counter (counter_next: seeded from the clock, so
--              tokens only grow even when it is lost or expires while unused)
--   p:w:<id>   the channel that wakes entry <id> when it is granted
--   p:epoch    the epoch marker (epoch_wait): nothing is granted while it is missing,
--              names a time not yet reached, or (lines whose clients watch for
--              failovers) names another server's replication id
-- Elections also keep p:v (id -> value), p:ver (change counter), p:cur (id of the
-- leader last published) and the channel p:ch (one message per change).
-- Semaphores also keep p:n, the permit count: set by the first entry to join, checked
-- by every later one (sem_agree), deleted when the line empties.
-- A lock's unfair holder (src/unfair_lock.rs) excludes the line: p:u, while it lives,
-- is a holder ahead of every entry (nothing is granted, alone or in line).

local function fq_forget(p, id)
  redis.call('ZREM', p .. ':q', id)
  redis.call('HDEL', p .. ':g', id)
  redis.call('HDEL', p .. ':v', id)
end

-- Grants entry id (mode w or r) of a lock or read-write lock whose line is empty: it
-- is first in line, so it is granted at once, as fq_settle would, without walking the
-- line. Its arrival score is 0: every later arrival takes the next p:seq, which is at
-- least 1, so it stays behind (p:seq is left alone, idling out as after a release).
-- p:fence keeps the idle TTL the last release gave it: should it run out while this
-- entry holds, the next grant seeds it from the clock again (counter_next), so tokens
-- still only grow, and an uncontended cycle writes no TTL changes.
-- Returns the grant script's reply, {1, token} (token 0 for a reader).
local function fq_grant_alone(p, id, mode)
  redis.call('ZADD', p .. ':q', 0, id)
  local token = 0
  if mode == 'w' then
    token = counter_next(p .. ':fence')
  end
  redis.call('HSET', p .. ':g', id, decimal(token))
  return {1, token}
end

-- Grants what the fair rule now admits: the first live entry if it is a writer, or
-- every reader with no live writer ahead of it, or (semaphores) the first p:n live
-- permit entries. Entries whose key is gone (their session expired) are forgotten on
-- the way. Each newly granted entry gets its token (writers and permits: the next
-- value of p:fence) and exactly one wake-up, except the entry `quiet` (optional): the
-- caller's own, which learns of its grant from the reply. `rid`: the client's
-- replication id of this server, as replid takes it (optional).
local function fq_settle(p, quiet, rid)
  local q = p .. ':q'
  local g = p .. ':g'
  local live_ahead = false
  -- Semaphores: the permit count (1, the safe side, should p:n be missing) and the
  -- live entries seen so far.
  local cap = 1
  if string.sub(p, -4) == ':sem' then
    cap = tonumber(redis.call('GET', p .. ':n')) or 1
  end
  local live = 0
  local start = 0
  -- After the store forgot, nothing is granted before the lock-delay ends.
  if epoch_wait(p, rid) ~= 0 then
    return
  end
  -- Nor while a lock's unfair holder lives (see the layout above).
  if string.sub(p, -5) == ':lock' and redis.call('EXISTS', p .. ':u') == 1 then
    return
  end
  while true do
    local ids = redis.call('ZRANGE', q, start, start + 63)
    if #ids == 0 then
      return
    end
    local kept = 0
    for _, id in ipairs(ids) do
      local v = redis.call('GET', p .. ':e:' .. id)
      if not v then
        fq_forget(p, id)
      else
        kept = kept + 1
        local writer = string.sub(v, 1, 1) == 'w'
        local permit = string.sub(v, 1, 1) == 's'
        if (writer and live_ahead) or (permit and live >= cap) then
          return
        end
        if redis.call('HEXISTS', g, id) == 0 then
          local token = 0
          if writer or permit then
            token = counter_next(p .. ':fence')
            redis.call('PERSIST', p .. ':fence')
          end
          redis.call('HSET', g, id, decimal(token))
          if id ~= quiet then
            publish(p .. ':w:' .. id, decimal(token))
          end
        end
        if writer then
          return
        end
        live_ahead = true
        live = live + 1
      end
    end
    start = start + kept
  end
end

-- The live entries of a waiter line (holders and waiters); read-only. An entry whose
-- key is gone (its session expired) is not counted: fq_settle forgets it.
local function fq_live(p)
  local n = 0
  for _, id in ipairs(redis.call('ZRANGE', p .. ':q', 0, -1)) do
    if redis.call('EXISTS', p .. ':e:' .. id) == 1 then
      n = n + 1
    end
  end
  return n
end

-- The unfair lock (src/unfair_lock.rs) of a lock p = "{<namespace><name>}:lock", beside
-- its fair line and sharing its p:fence and p:epoch:
--   p:u        the holder: "u<id>:<token>" (<id> the acquisition's, as an entry's), PX =
--              session TTL, listed in its session's registry and renewed with it; an
--              acquisition names itself "u<id>" (unfair_mine) until it knows its token
--   p:uq       sorted set of the waiting acquisitions' ids, scored by arrival (µs)
--   p:um:<id>  a waiter's marker, PX until a while after its next re-check: the waiter
--              is live while it exists; its value is the wake id <w> of the locker
--              handle that waits (the id of that handle's first waiting acquisition)
--   p:uw:<w>   the channel that wakes handle <w>'s waiter (the head of p:uq) to ask
--              again; the handle stays subscribed to it between its waits
-- While the fair line holds the lock and unfair waiters wait behind it, the line ends
-- with a member "u" (UNFAIR_BEHIND, scored +inf) that has no entry key: to the line a
-- dead entry, which keeps its last release off the uncontended path (release.lua), so
-- that the release that empties the line wakes the head of p:uq. A lock used fairly
-- alone never has it, and pays nothing.

-- Whether cur, the value of p:u (false when there is none), is the hold of the
-- acquisition val names: "u<id>", as the acquisition names itself, or the whole hold
-- "u<id>:<token>", as a session's registry lists it.
local function unfair_mine(cur, val)
  if not cur then
    return false
  end
  return cur == val or string.sub(cur, 1, #val + 1) == val .. ':'
end

-- The member of a fair line that stands for the unfair waiters behind it (see above).
local UNFAIR_BEHIND = 'u'

-- Wakes the head of the unfair wait line of p: its first waiter whose marker lives
-- (the others before it, gone with their process, are dropped on the way). One
-- wake-up, never more: the head asks again and waits on as head if it lost.
local function unfair_wake(p)
  while true do
    local head = redis.call('ZRANGE', p .. ':uq', 0, 0)
    if #head == 0 then
      return
    end
    local wake = redis.call('GET', p .. ':um:' .. head[1])
    if wake then
      publish(p .. ':uw:' .. wake, '1')
      return
    end
    redis.call('ZREM', p .. ':uq', head[1])
  end
end

-- Hands the free unfair lock of p on: to the fair line first (fq_settle grants its head
-- and wakes it), which unfair contenders wait behind (UNFAIR_BEHIND then marks them);
-- when nobody is left in that line, to the head of the unfair wait line.
local function unfair_pass(p)
  if redis.call('EXISTS', p .. ':q') == 1 then
    fq_settle(p)
    if redis.call('EXISTS', p .. ':q') == 1 then
      if redis.call('EXISTS', p .. ':uq') == 1 then
        redis.call('ZADD', p .. ':q', '+inf', UNFAIR_BEHIND)
      end
      return
    end
  end
  unfair_wake(p)
end

-- Lets go of the unfair acquisition val names (see unfair_mine) of the lock p: its
-- hold, if it holds (deleted), and its place in the wait line, if it waits. A hold let
-- go, or a head leaving a free lock (it may have taken the wake-up of the last
-- release), hands the lock on. Returns 1 if it held, else 0.
local function unfair_let_go(p, val)
  local mine = 0
  local cur = redis.call('GET', p .. ':u')
  if unfair_mine(cur, val) then
    redis.call('DEL', p .. ':u')
    mine = 1
    cur = false
  end
  local id = string.match(val, '^u([^:]+)')
  local rank = id and redis.call('ZRANK', p .. ':uq', id)
  if rank then
    redis.call('ZREM', p .. ':uq', id)
    redis.call('DEL', p .. ':um:' .. id)
  end
  if mine == 1 or (rank == 0 and not cur) then
    unfair_pass(p)
  end
  return mine
end

-- The contenders of a waiter line p (fq_live) and, for a lock, of its unfair side: the
-- live unfair holder p:u and the waiters of p:uq whose marker lives; read-only. Other
-- kinds of line have no unfair side, and count their line alone.
local function lock_contenders(p)
  local n = fq_live(p) + redis.call('EXISTS', p .. ':u')
  for _, id in ipairs(redis.call('ZRANGE', p .. ':uq', 0, -1)) do
    n = n + redis.call('EXISTS', p .. ':um:' .. id)
  end
  return n
end

-- A semaphore's permit count is part of its state: a joiner naming count n (a decimal
-- string) agrees with p:n, or sets it when nobody is live in the line. Returns nil
-- when it agrees, else the count in use (a decimal string).
local function sem_agree(p, n)
  local cur = redis.call('GET', p .. ':n')
  if cur and cur ~= n and fq_live(p) > 0 then
    return cur
  end
  redis.call('SET', p .. ':n', n)
  return nil
end

-- The granted head of an election (its id and term), or nil.
local function elect_leader(p)
  local head = redis.call('ZRANGE', p .. ':q', 0, 0)
  if #head == 0 then
    return nil, nil
  end
  local term = redis.call('HGET', p .. ':g', head[1])
  if not term then
    return nil, nil
  end
  return head[1], term
end

-- Publishes the election's state as change number p:ver + 1:
-- "<ver> <term> <pttl of the leader's key> <key length> <key><value>", or
-- "<ver> 0 0 0 " when there is no leader.
local function elect_publish(p, id, term)
  local ver = decimal(counter_next(p .. ':ver'))
  redis.call('PERSIST', p .. ':ver')
  if id then
    local key = p .. ':e:' .. id
    local value = redis.call('HGET', p .. ':v', id) or ''
    local pttl = decimal(redis.call('PTTL', key))
    redis.call('SET', p .. ':cur', id)
    publish(p .. ':ch', ver .. ' ' .. term .. ' ' .. pttl .. ' ' .. decimal(string.len(key)) .. ' ' .. key .. value)
  else
    redis.call('DEL', p .. ':cur')
    publish(p .. ':ch', ver .. ' 0 0 0 ')
  end
end

-- Publishes a change of leader, if there was one since the last publication.
local function elect_sync(p)
  local id, term = elect_leader(p)
  local cur = redis.call('GET', p .. ':cur')
  if (id or false) ~= cur then
    elect_publish(p, id, term)
  end
end

-- Double barriers: under p = "{<namespace><name>}:dbar":
--   p:p        sorted set of participant ids by arrival (p:seq)
--   p:e:<id>   the participant's entry key (session-held, as above)
--   p:ready    set (to a p:seq value) when the count is reached
--   p:gen      bumped each time the last participant leaves
--   p:ch       channel: "ready" and "left"

-- Forgets dead participants; returns the live count and the smallest remaining TTL.
local function dbar_live(p)
  local ids = redis.call('ZRANGE', p .. ':p', 0, -1)
  local n = 0
  local soonest = -1
  for _, id in ipairs(ids) do
    local t = redis.call('PTTL', p .. ':e:' .. id)
    if t == -2 then
      redis.call('ZREM', p .. ':p', id)
    else
      n = n + 1
      if t >= 0 and (soonest < 0 or t < soonest) then
        soonest = t
      end
    end
  end
  return n, soonest
end

-- Ends the round: every participant has left.
local function dbar_done(p)
  redis.call('DEL', p .. ':ready')
  redis.call('INCR', p .. ':gen')
  publish(p .. ':ch', 'left')
end

-- Queues: under p = "{<namespace><name>}:queue":
--   p:items     sorted set scored by priority; member = 16 hex digits of p:seq, then
--               the item (so equal priorities pop in arrival order)
--   p:inflight  hash consumer call id -> "<priority, 5 digits><member>" of an item
--               popped (at most once) but not yet acknowledged (restored if the call
--               is cancelled)
--   p:ift       sorted set of those call ids by the server's time of the claim (ms):
--               a record older than the stale bound is put back (its consumer died)
--   p:held      hash receiver call id -> "<priority, 5 digits><member>" of an item
--               received (at least once) and held through a session
--   p:e:<cid>   the hold's key, value "q<cid>", PX = the session's TTL, listed in the
--               session's registry and renewed with it; when it is gone (the session
--               ended), the item goes back at its place
--   p:dc        hash member -> how many times it was received (deliveries)
--   p:waiters   sorted set of waiting consumer call ids by arrival
--   p:wm:<cid>  a waiting consumer's marker (PX), p:w:<cid> its wake-up channel
--   p:cx:<cid>  a cancelled call's tombstone (PX QUEUE_CANCELLED_MS): see queue_cancelled

-- Whether consumer call cid was cancelled (queue_cancel.lua left p:cx:<cid>): a pop or
-- receive of that call that runs after its cancel (a request the client gave up on,
-- sent again by a client library's retry after a reconnection, as redis-rs's cluster
-- client does) must take nothing, since nobody would return or put back what it took.
-- The tombstone lasts QUEUE_CANCELLED_MS, longer than such a retry can come (redis-rs
-- retries within seconds); a claim made later still is put back by the stale sweep.
local QUEUE_CANCELLED_MS = 120000

local function queue_cancelled(p, cid)
  return redis.call('EXISTS', p .. ':cx:' .. cid) == 1
end

-- Wakes the longest-waiting live consumer, if any.
local function queue_wake(p)
  while true do
    local w = redis.call('ZPOPMIN', p .. ':waiters')
    if #w == 0 then
      return
    end
    if redis.call('DEL', p .. ':wm:' .. w[1]) == 1 then
      publish(p .. ':w:' .. w[1], '1')
      return
    end
  end
end

-- Puts a record "<priority, 5 digits><member>" back at its place.
local function queue_restore(p, rec)
  redis.call('ZADD', p .. ':items', tonumber(string.sub(rec, 1, 5)), string.sub(rec, 6))
end

-- Ends the hold of receiver call cid (its key is deleted or gone): the item goes back
-- at its place and one waiting consumer is woken. Returns 1 if an item went back.
local function queue_unhold(p, cid)
  local rec = redis.call('HGET', p .. ':held', cid)
  if not rec then
    return 0
  end
  redis.call('HDEL', p .. ':held', cid)
  queue_restore(p, rec)
  queue_wake(p)
  return 1
end

-- The server's clock in ms.
local function queue_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Puts back items whose hold key is gone (the receiver's session ended) and
-- at-most-once claims older than stale_ms (the client's `stale_claim=`, by default
-- 15 minutes: longer than any acknowledgement or put-back their owner may still be
-- attempting). Returns how long (ms) until something may come back without a wake-up:
-- the shortest TTL of the live holds or the time until the oldest claim left is stale,
-- or -1 when there is neither.
local function queue_sweep(p, stale_ms)
  local soonest = -1
  local held = redis.call('HKEYS', p .. ':held')
  for _, cid in ipairs(held) do
    local t = redis.call('PTTL', p .. ':e:' .. cid)
    if t == -2 then
      queue_unhold(p, cid)
    elseif t >= 0 and (soonest < 0 or t < soonest) then
      soonest = t
    end
  end
  local inflight = p .. ':inflight'
  if redis.call('EXISTS', inflight) == 1 or redis.call('EXISTS', p .. ':ift') == 1 then
    local now = queue_now()
    if redis.call('HLEN', inflight) > redis.call('ZCARD', p .. ':ift') then
      -- A claim whose time is missing (its `:ift` entry gone while the claim stayed)
      -- is timed from now, so that it still goes stale.
      for _, cid in ipairs(redis.call('HKEYS', inflight)) do
        redis.call('ZADD', p .. ':ift', 'NX', now, cid)
      end
    end
    local stale = redis.call('ZRANGEBYSCORE', p .. ':ift', '-inf', now - stale_ms)
    for _, cid in ipairs(stale) do
      local rec = redis.call('HGET', inflight, cid)
      if rec then
        redis.call('HDEL', inflight, cid)
        queue_restore(p, rec)
        queue_wake(p)
      end
      redis.call('ZREM', p .. ':ift', cid)
    end
    local oldest = redis.call('ZRANGE', p .. ':ift', 0, 0, 'WITHSCORES')
    if #oldest > 0 then
      local due = math.max(tonumber(oldest[2]) + stale_ms - now, 0)
      if soonest < 0 or due < soonest then
        soonest = due
      end
    end
  end
  return soonest
end

-- Whether the hold of the entry key ekey ("p:e:<id>" of a waiter line) is still the
-- current grant: the key still holds val, the value it was created with (it expires with
-- the session, and a release or a revoke deletes it), and the line's grant table p:g
-- still records the entry's grant with the fencing token `token` (its digits); for a
-- lock's unfair holder key p:u, the key holds "<val>:<token>". The check of every write
-- guarded by a hold (guarded_put.lua, guarded_eval.lua): it only reads, so a script
-- makes its write after it, in the same atomic step.
local function hold_current(ekey, val, token)
  local p, id = string.match(ekey, '^(.*}:%a+):e:(.+)$')
  if not p then
    -- A lock's unfair holder key p:u: current while it holds "<val>:<token>".
    return string.match(ekey, '}:lock:u$') ~= nil and redis.call('GET', ekey) == val .. ':' .. token
  end
  if redis.call('GET', ekey) ~= val then
    return false
  end
  return redis.call('HGET', p .. ':g', id) == token
end

-- Releases one session-held entry key (lock, rwlock or election entry, double-barrier
-- participant, or a lock's unfair holder key p:u, see unfair_let_go): deletes it if it
-- still holds val, removes it from its primitive, and wakes whoever that lets through.
-- Returns 1 if the key still held val, else 0.
local function release_hold(ekey, val)
  local p, kind, id = string.match(ekey, '^(.*}:(%a+)):e:(.+)$')
  if not p then
    local unfair = string.match(ekey, '^(.*}:lock):u$')
    if unfair then
      return unfair_let_go(unfair, val)
    end
    return 0
  end
  local mine = 0
  if redis.call('GET', ekey) == val then
    redis.call('DEL', ekey)
    mine = 1
  end
  if kind == 'queue' then
    queue_unhold(p, id)
  elseif kind == 'dbar' then
    redis.call('ZREM', p .. ':p', id)
    if dbar_live(p) == 0 then
      dbar_done(p)
    end
  else
    fq_forget(p, id)
    fq_settle(p)
    if kind == 'elect' then
      elect_sync(p)
    end
    if redis.call('EXISTS', p .. ':q') == 0 then
      -- A lock's unfair waiters, if any, come next (see UNFAIR_BEHIND): one wake-up.
      if kind == 'lock' and redis.call('EXISTS', p .. ':u') == 0 then
        unfair_wake(p)
      end
      -- Nobody holds or waits: let the counters go once the name has been idle.
      redis.call('PEXPIRE', p .. ':fence', FAIR_IDLE_MS)
      redis.call('PEXPIRE', p .. ':seq', FAIR_IDLE_MS)
      redis.call('PEXPIRE', p .. ':ver', FAIR_IDLE_MS)
      redis.call('PEXPIRE', p .. ':epoch', FAIR_IDLE_MS)
      -- A semaphore's count is state only while someone holds or waits.
      redis.call('DEL', p .. ':n')
    end
  end
  return mine
end

-- Releases everything a session registry lists, and deletes the registry. Under Redis
-- Cluster there is no registry in the store (reg is nil): the client lists what its
-- session holds and releases each key with release.lua.
local function release_all(reg)
  if not reg then
    return
  end
  local held = redis.call('HGETALL', reg)
  redis.call('DEL', reg)
  for i = 1, #held, 2 do
    release_hold(held[i], held[i + 1])
  end
end

-- Sessions as seen by a script that adds a key to one (fair_acquire, dbar_enter,
-- queue_receive).
--
-- One server (skey set): skey is the session key and check its nonce; the session is
-- usable when the key holds the nonce, and what is left of it is the key's PTTL.
-- Redis Cluster (skey nil): the session key lives in another hash slot, which a
-- script run in a primitive's slot may not touch; check is then the client's own
-- bound on what is left of the session (ms): its client-side deadline plus the
-- margin, counted from the send time of its last acknowledged renewal, so never more
-- than the session key's PTTL.
-- Returns what is left (ms), or nil when the session is gone, another's, or has less
-- than margin left (past the owner's client-side deadline, see keepalive.lua).
local function session_left(skey, check, margin)
  local left
  if skey then
    if redis.call('GET', skey) ~= check then
      return nil
    end
    left = redis.call('PTTL', skey)
  else
    left = tonumber(check) or 0
  end
  if left < tonumber(margin) then
    return nil
  end
  return left
end

-- The PX of an entry key that a script adds through a session whose session_left
-- answered `left`, `ttl` being the session's TTL (ms).
-- One server: `left`, so the entry expires with the session key until the keepalive,
-- which renews both in one run, gives both the whole TTL.
-- Redis Cluster: the whole TTL, from this run. The entry is renewed by the client's
-- renewals only once its reply has listed it; a renewal sent while this script was in
-- flight makes the client count its deadline from the instant before this script was
-- sent (see HeldKeys in src/session.rs), so the entry must live at least one TTL from
-- then, as it does from this run, which comes later. `left` counts from the session's
-- last renewal before the take instead: an entry given `left` would expire before that
-- deadline whenever the take was sent more than the margin after that renewal.
local function session_px(skey, left, ttl)
  if skey then
    return left
  end
  return tonumber(ttl)
end

-- Lists entry key ekey (value val) in the session registry reg, which lives as long as
-- the session key (left ms); nothing under Redis Cluster (reg nil: the client lists it).
local function session_list(reg, ekey, val, left)
  if reg then
    redis.call('HSET', reg, ekey, val)
    redis.call('PEXPIRE', reg, left)
  end
end

-- Unlists entry key ekey from the session registry reg (nil under Redis Cluster).
local function session_unlist(reg, ekey)
  if reg then
    redis.call('HDEL', reg, ekey)
  end
end
