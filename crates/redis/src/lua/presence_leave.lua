-- KEYS: connections, users. ARGV: conn, user.
-- Returns 1 if it was the user's last connection. Empty hashes vanish.
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then
  return 0
end
if redis.call('HINCRBY', KEYS[2], ARGV[2], -1) <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[2])
  return 1
end
return 0
