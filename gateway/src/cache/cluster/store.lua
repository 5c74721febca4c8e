local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if tonumber(redis.call('GET', KEYS[3]) or '0') == tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'at', now, 'status', ARGV[3], 'headers', ARGV[4], 'body', ARGV[5], 'generation', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
end
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
end
return 1
