-- KEYS: meta, stream.
-- ARGV: mode ('P' position, 'S' since, 'L' latest), offset, epoch, limit,
--       ttl_ms, now_ms, candidate epoch, meta ttl (s).
-- Returns {ok (1, or 0 when the position cannot be recovered), epoch, top, entries}.
local epoch, top = ensure_meta(KEYS[1], KEYS[2], ARGV[7], tonumber(ARGV[8]))
trim_age(KEYS[2], tonumber(ARGV[6]) - tonumber(ARGV[5]))
local mode = ARGV[1]
local limit = tonumber(ARGV[4])
if mode == 'P' then
  return {1, epoch, top, {}}
end
if mode == 'L' then
  return {1, epoch, top, redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', limit)}
end
local from = tonumber(ARGV[2])
local first = top + 1
local head = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
if #head > 0 then
  first = tonumber(string.match(head[1][1], '^(%d+)'))
end
if ARGV[3] ~= epoch or from > top or from + 1 < first then
  return {0, epoch, top, {}}
end
return {1, epoch, top, redis.call('XRANGE', KEYS[2], string.format('%d-0', from + 1), '+', 'COUNT', limit)}
