-- KEYS: control stream. ARGV: pub/sub channel, body, max entries.
-- Kept in a stream so a node cut off from Redis replays what it missed.
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', tonumber(ARGV[3]), '*', 'c', ARGV[2])
redis.call('PUBLISH', ARGV[1], id .. '\n' .. ARGV[2])
return id
