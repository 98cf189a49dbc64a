-- ARGV: conn, node, since_ms, limit. Returns the evicted (oldest first).
add(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3])
return evict(KEYS[1], KEYS[2], tonumber(ARGV[4]))
