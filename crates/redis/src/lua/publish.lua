-- KEYS: meta, stream.
-- ARGV: pub/sub channel, body, max_events, ttl_ms, now_ms, candidate epoch,
--       meta ttl (s).
-- Appends, trims by length and age, and publishes, atomically; returns
-- {offset, epoch}. The stream id of an event is its offset.
local epoch = ensure_meta(KEYS[1], KEYS[2], ARGV[6], tonumber(ARGV[7]))
local offset = redis.call('HINCRBY', KEYS[1], 's', 1)
local ttl = tonumber(ARGV[4])
redis.call('XADD', KEYS[2], 'MAXLEN', tonumber(ARGV[3]), string.format('%d-0', offset), 'p', ARGV[2])
trim_age(KEYS[2], tonumber(ARGV[5]) - ttl)
redis.call('PEXPIRE', KEYS[2], math.max(ttl, 1))
redis.call('PUBLISH', ARGV[1], string.format('%d', offset) .. '\n' .. epoch .. '\n' .. ARGV[2])
return {offset, epoch}
