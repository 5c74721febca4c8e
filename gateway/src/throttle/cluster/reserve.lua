local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local margin = tonumber(ARGV[3])
-- The shares of replicas whose lease has expired: each may be spending its share on its own.
local fallen = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', '(' .. string.format('%.0f', math.floor(now / 1000) - tonumber(ARGV[7])))
local held = 0
for _, id in ipairs(fallen) do
  held = held + tonumber(redis.call('HGET', KEYS[5], id) or '0')
end
local sustained = rate - held - (burst - 1)
if sustained < 1 then
  return {-1, '', 0, 0}
end
local interval = math.ceil(1000000 * (1 + margin) / sustained)
local tolerance = interval * (burst - 1)
local earliest = now + tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
-- A tolerance larger than the last one (a reload raised `burst`) is earned, not granted at once.
local last_tolerance = tonumber(redis.call('GET', KEYS[6]) or tostring(tolerance))
if tolerance > last_tolerance then
  tat = math.max(tat, now + tolerance)
end
local slot = math.max(earliest, tat - tolerance)
local next_tat = math.max(tat, slot) + interval
local ttl_ms = math.floor((next_tat - now) / 1000) + 60000
local previous = redis.call('GET', KEYS[3])
local previous_token = ''
local previous_slot = now
if previous then
  local space = string.find(previous, ' ', 1, true)
  previous_slot = tonumber(string.sub(previous, 1, space - 1))
  previous_token = string.sub(previous, space + 1)
end
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', ttl_ms)
redis.call('SET', KEYS[3], string.format('%.0f', slot) .. ' ' .. ARGV[6], 'PX', ttl_ms)
redis.call('SET', KEYS[6], string.format('%.0f', tolerance), 'PX', ttl_ms)
redis.call('ZADD', KEYS[2], math.floor(now / 1000), ARGV[5])
return {math.floor(slot - now), previous_token, math.floor(previous_slot - now), interval}
