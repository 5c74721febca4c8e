local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('SET', KEYS[2], string.format('%.0f', now), 'PX', 10000)
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local next_tat = math.max(tat, now + tonumber(ARGV[1]))
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', math.floor((next_tat - now) / 1000) + 60000)
return 1
