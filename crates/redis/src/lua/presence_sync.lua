-- KEYS: connections, users. ARGV: node, then conn, user pairs the node holds.
-- Makes the node's entries in this channel exactly the given ones (none for
-- a dead node); returns the users left with no connection.
local node = ARGV[1]
local keep = {}
for i = 2, #ARGV, 2 do
  keep[ARGV[i]] = ARGV[i + 1]
end
local gone = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local conn, v = all[i], all[i + 1]
  local user, n = string.match(v, '^(.*)\t([^\t]*)$')
  if n == node and keep[conn] == nil then
    redis.call('HDEL', KEYS[1], conn)
    if redis.call('HINCRBY', KEYS[2], user, -1) <= 0 then
      redis.call('HDEL', KEYS[2], user)
      table.insert(gone, user)
    end
  end
end
for conn, user in pairs(keep) do
  if redis.call('HSETNX', KEYS[1], conn, user .. '\t' .. node) == 1 then
    redis.call('HINCRBY', KEYS[2], user, 1)
  end
end
return gone
