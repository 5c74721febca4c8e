local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
local rate = tonumber(ARGV[4])
local held = tonumber(ARGV[5])
local forget = tonumber(ARGV[6])
local at_least = tonumber(ARGV[7])
-- Replicas whose lease and fallback window are both over spend nothing any more: forgotten.
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - forget))
for _, id in ipairs(gone) do
  redis.call('HDEL', KEYS[3], id)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - forget))
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[3]))
local known = redis.call('ZSCORE', KEYS[1], ARGV[1]) and 1 or 0
redis.call('ZADD', KEYS[1], now, ARGV[1])
local alive = redis.call('ZCOUNT', KEYS[1], now - lease, '+inf')
-- Every replica's share of the budget while cut off from Redis: `rate` in all, at most.
local others = 0
local shares = redis.call('HGETALL', KEYS[3])
for i = 1, #shares, 2 do
  if shares[i] ~= ARGV[1] then
    others = others + tonumber(shares[i + 1])
  end
end
local share = math.min(math.floor(rate / math.max(alive, at_least, 1)), math.max(rate - others, 0))
-- What the replica still holds stays reserved until it hears of the new share.
redis.call('HSET', KEYS[3], ARGV[1], math.max(share, held))
for i = 1, 3 do
  redis.call('PEXPIRE', KEYS[i], forget + 60000)
end
return {alive, redis.call('ZCARD', KEYS[2]), share, redis.call('PTTL', KEYS[4]), known}
