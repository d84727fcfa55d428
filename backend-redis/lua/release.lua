-- Releases one session-held entry. KEYS[1]: entry key, KEYS[2]: session registry (none
-- under Redis Cluster). ARGV: channel prefix, expected value. Returns 1 if it was still
-- held, else 0.
--
-- The script runs in two parts (see `compose` in src/scripts.rs): the first lets go of
-- a lock or read-write lock entry alone in its line, the common case, with only the
-- few library definitions it uses; the second walks the line for everything else.
local ekey, val = KEYS[1], ARGV[2]
session_unlist(KEYS[2], ekey)
-- Uncontended (a lock or read-write lock entry alone in its line): nobody is to be
-- granted or woken, so the line and its grants go at once and the counters idle out,
-- as the second part leaves them, without walking the line.
local p, kind, id = string.match(ekey, '^(.*}:(%a+)):e:(.+)$')
if kind == 'lock' or kind == 'rw' then
  local line = redis.call('ZRANGE', p .. ':q', 0, 1)
  if #line == 1 and line[1] == id then
    -- One DEL for the entry (when still ours), the line and its grants.
    local mine = 0
    if redis.call('GET', ekey) == val then
      mine = 1
      redis.call('DEL', ekey, p .. ':q', p .. ':g')
    else
      redis.call('DEL', p .. ':q', p .. ':g')
    end
    -- Counters without a TTL (set by a contended grant or join) get the idle one;
    -- one that has it keeps it (see fair_acquire.lua), so this writes nothing more.
    for _, counter in ipairs({p .. ':fence', p .. ':seq'}) do
      if redis.call('PTTL', counter) == -1 then
        redis.call('PEXPIRE', counter, FAIR_IDLE_MS)
      end
    end
    return mine
  end
end
-- @cold
return release_hold(ekey, val)
