local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local earliest = now + tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
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
redis.call('SET', KEYS[3], string.format('%.0f', slot) .. ' ' .. ARGV[5], 'PX', ttl_ms)
redis.call('ZADD', KEYS[2], math.floor(now / 1000), ARGV[4])
return {math.floor(slot - now), previous_token, math.floor(previous_slot - now)}
