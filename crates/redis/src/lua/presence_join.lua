-- KEYS: connections (conn -> user \t node), users (user -> connections).
-- ARGV: conn, user, node. Returns 1 if it is the user's first connection.
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2] .. '\t' .. ARGV[3]) == 0 then
  return 0
end
if redis.call('HINCRBY', KEYS[2], ARGV[2], 1) == 1 then
  return 1
end
return 0
