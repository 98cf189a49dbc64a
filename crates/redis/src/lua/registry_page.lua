-- KEYS: one node's connection index (see Keys::node_connections).
-- ARGV: where to start ('-', or an exclusive bound '(' .. member prefix),
-- how many. Returns the index's size, then up to that many members after
-- the start, in order.
local out = {redis.call('ZCARD', KEYS[1])}
for _, m in ipairs(redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], '+', 'LIMIT', 0, tonumber(ARGV[2]))) do
  table.insert(out, m)
end
return out
