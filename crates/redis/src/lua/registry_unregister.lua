-- ARGV: conn.
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
drop_if_empty(KEYS[1], KEYS[2])
return 1
