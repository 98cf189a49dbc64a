-- ARGV: node, limit, then conn, since_ms pairs the node holds. Makes the
-- node's registrations for this user exactly those (none for a dead node),
-- adding missing ones as the newest; returns the evicted past the limit.
local node = ARGV[1]
local keep = {}
for i = 3, #ARGV, 2 do
  keep[ARGV[i]] = ARGV[i + 1]
end
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  local conn, v = all[i], all[i + 1]
  if conn ~= '#' and string.match(v, '^([^\t]*)\t') == node and keep[conn] == nil then
    redis.call('HDEL', KEYS[2], conn)
    redis.call('ZREM', KEYS[1], conn)
  end
end
for conn, since in pairs(keep) do
  if redis.call('HEXISTS', KEYS[2], conn) == 0 then
    add(KEYS[1], KEYS[2], conn, node, since)
  end
end
local out = evict(KEYS[1], KEYS[2], tonumber(ARGV[2]))
drop_if_empty(KEYS[1], KEYS[2])
return out
