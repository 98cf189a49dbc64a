-- KEYS: nodes (sorted set: node -> last heartbeat, Redis time in ms).
-- ARGV: node, dead after (ms). Returns the nodes silent for longer.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
