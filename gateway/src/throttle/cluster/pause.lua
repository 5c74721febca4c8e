local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local resume = now + tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if resume > tat then
  redis.call('SET', KEYS[1], string.format('%.0f', resume), 'PX', math.floor(tonumber(ARGV[1]) / 1000) + 60000)
end
-- Every replica learns of the pause at its next heartbeat.
local ms = math.max(math.floor(tonumber(ARGV[1]) / 1000), 1)
if redis.call('PTTL', KEYS[2]) < ms then
  redis.call('SET', KEYS[2], '1', 'PX', ms)
end
return 1
