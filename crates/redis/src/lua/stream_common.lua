-- Shared by publish.lua and history.lua (prepended to each).

local function current_run_id()
  local info = redis.call('INFO', 'server')
  return string.match(info, 'run_id:(%x+)') or ''
end

-- The stream's epoch and top offset. A new epoch starts (and old entries go)
-- when the stream is new, or when Redis restarted since the meta was written
-- (perhaps from an older snapshot, whose stream top is behind). A restart
-- moves LASTSAVE (as saves do); only then is the run id read (INFO is
-- costly) to tell a restart from a save. LASTSAVE has whole seconds: a value
-- recorded in the very second of a save or start could equal that of a
-- restart within the same second, so it is recorded as 'u' (unknown) and the
-- next access checks the run id.
local function ensure_meta(meta, stream, candidate, meta_ttl)
  local m = redis.call('HMGET', meta, 'e', 's', 'l', 'r')
  local saved = redis.call('LASTSAVE')
  local now_s = tonumber(redis.call('TIME')[1])
  local mark = tostring(saved)
  if saved >= now_s then
    mark = 'u'
  end
  local epoch = m[1]
  local top = tonumber(m[2] or '0') or 0
  if not epoch then
    epoch = candidate
    top = 0
    redis.call('DEL', stream)
    redis.call('HSET', meta, 'e', epoch, 's', 0, 'l', mark, 'r', current_run_id())
  elseif m[3] ~= tostring(saved) then
    local run = current_run_id()
    if run ~= m[4] then
      epoch = candidate
      top = 0
      redis.call('DEL', stream)
      redis.call('HSET', meta, 'e', epoch, 's', 0, 'l', mark, 'r', run)
    elseif m[3] ~= mark then
      redis.call('HSET', meta, 'l', mark)
    end
  end
  redis.call('EXPIRE', meta, meta_ttl)
  return epoch, top
end

-- Drops entries older than `cutoff` (Unix ms; each entry's body starts with
-- its time). Entries are in time order, so only the head is looked at.
local function trim_age(stream, cutoff)
  for _ = 1, 16 do
    local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', 64)
    if #head == 0 then
      return
    end
    for _, e in ipairs(head) do
      local t = tonumber(string.match(e[2][2], '^(%d+)')) or 0
      if t >= cutoff then
        redis.call('XTRIM', stream, 'MINID', e[1])
        return
      end
    end
    local n = tonumber(string.match(head[#head][1], '^(%d+)'))
    redis.call('XTRIM', stream, 'MINID', string.format('%d-0', n + 1))
  end
end
