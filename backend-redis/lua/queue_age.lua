-- How long the oldest queued item with an enqueue time has waited, in ms on the
-- server's clock, or -1 when no queued item has one. ARGV: channel prefix, p.
-- Members of one priority sort by arrival, so the first member of each priority that
-- has a time is that priority's oldest: one read per priority (more only past items
-- without a time), not one per item.
local p = ARGV[2]
local items, et = p .. ':items', p .. ':et'
if redis.call('EXISTS', et) == 0 then
  return -1
end
local oldest = nil
local from = '-inf'
while true do
  local first = redis.call('ZRANGEBYSCORE', items, from, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if #first == 0 then
    break
  end
  local score = first[2]
  local offset = 0
  local found = false
  while not found do
    local batch = redis.call('ZRANGEBYSCORE', items, score, score, 'LIMIT', offset, 100)
    if #batch == 0 then
      break
    end
    for _, member in ipairs(batch) do
      local t = redis.call('HGET', et, string.sub(member, 1, 16))
      if t then
        t = tonumber(t)
        if not oldest or t < oldest then
          oldest = t
        end
        found = true
        break
      end
    end
    offset = offset + #batch
  end
  from = '(' .. score
end
if not oldest then
  return -1
end
return math.max(0, queue_now() - oldest)
