-- Renews the keys a session holds in one hash slot (Redis Cluster, where the session
-- key and its holds live in different slots: keepalive.lua renews the session key,
-- this script the held keys of each slot, all sent at once).
-- KEYS: the held entry keys of one slot. ARGV: channel prefix, ttl ms, margin ms, then
-- the value each key must hold, in KEYS order.
-- Returns {0}, renewing none, when a key that holds its value has less than the margin
-- left of its TTL: the renewal arrives after the owner's client-side deadline (see
-- keepalive.lua), and the owner declares the session lost.
-- Otherwise renews every key that holds its value and returns {1, i...}: the 1-based
-- positions of the keys that are gone or hold another value. The owner tells which of
-- those it released while the renewal was on its way (no longer listed: not a loss)
-- from those it still holds (expired or revoked: the session is lost); only the client
-- knows, since a release unlists the key before its script is sent.
local margin = tonumber(ARGV[3])
local held = {}
local reply = {1}
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[3 + i] then
    if redis.call('PTTL', KEYS[i]) < margin then
      return {0}
    end
    held[#held + 1] = KEYS[i]
  else
    reply[#reply + 1] = i
  end
end
for _, key in ipairs(held) do
  redis.call('PEXPIRE', key, ARGV[2])
end
return reply
