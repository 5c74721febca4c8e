redis.call('INCR', KEYS[1])
local epoch = redis.call('INCR', KEYS[2])
for i = 3, #KEYS do
  redis.call('DEL', KEYS[i])
end
local message = string.gsub(ARGV[2], '"epoch":0', '"epoch":' .. epoch, 1)
redis.call('PUBLISH', ARGV[1], message)
return epoch
