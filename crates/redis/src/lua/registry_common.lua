-- Shared by the registry scripts (prepended to each).
-- KEYS of every registry script: order (sorted set: conn -> registration
-- sequence), details (hash: conn -> node \t since_ms, and '#' the sequence).

-- Removes the oldest registrations past `limit`; returns conn, details pairs.
local function evict(order, details, limit)
  local out = {}
  local n = redis.call('ZCARD', order)
  if n > limit then
    local old = redis.call('ZRANGE', order, 0, n - limit - 1)
    for _, c in ipairs(old) do
      local d = redis.call('HGET', details, c)
      redis.call('ZREM', order, c)
      redis.call('HDEL', details, c)
      table.insert(out, c)
      table.insert(out, d or '')
    end
  end
  return out
end

local function add(order, details, conn, node, since)
  local seq = redis.call('HINCRBY', details, '#', 1)
  redis.call('ZADD', order, seq, conn)
  redis.call('HSET', details, conn, node .. '\t' .. since)
end

local function drop_if_empty(order, details)
  if redis.call('ZCARD', order) == 0 then
    redis.call('DEL', order, details)
  end
end
