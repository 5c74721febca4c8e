local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local e = redis.call('HMGET', KEYS[1], 'at', 'status', 'headers', 'body', 'generation')
local generation = tonumber(redis.call('GET', KEYS[3]) or '0')
local copy = false
if e[1] and tonumber(e[1]) >= tonumber(ARGV[2]) and tonumber(e[5]) == generation then
  copy = true
  if now - tonumber(e[1]) < tonumber(ARGV[1]) then
    return {1, now - tonumber(e[1]), e[2], e[3], e[4]}
  end
end
local function stale(kind, number)
  if copy then return {kind, number, e[2], e[3], e[4], now - tonumber(e[1])} end
  return {kind, number}
end
if redis.call('SET', KEYS[2], ARGV[3], 'NX', 'PX', ARGV[4]) then
  return stale(2, generation)
end
return stale(3, 0)
