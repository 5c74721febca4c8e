local departed = redis.call('GET', KEYS[1])
if not departed then
  return -1
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
return math.max(math.floor(tonumber(departed) + tonumber(ARGV[1]) - now), 0)
