-- KEYS: nodes (sorted set: node -> last heartbeat, Redis time in ms).
-- ARGV: dead after (ms). Returns the nodes heard from within it.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[1]), '+inf')
