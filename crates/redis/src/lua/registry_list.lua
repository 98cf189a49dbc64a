-- Returns conn, details pairs, oldest first.
local out = {}
for _, c in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  table.insert(out, c)
  table.insert(out, redis.call('HGET', KEYS[2], c) or '')
end
return out
