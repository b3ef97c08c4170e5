-- histflow realtime write: one user's events, atomically.
-- KEYS[1] = h:{uid}:t  timeline ZSET (member item, score view_at)
-- KEYS[2] = h:{uid}:r  records HASH  (item -> encoded record)
-- KEYS[3] = h:{uid}:m  meta HASH     (paused, day, cleared_at, d:<item>)
-- ARGV[1] = max items kept, ARGV[2] = key TTL seconds, ARGV[3] = today
-- (UTC day number), then per event: item, view_at, record.
-- Returns one status per event: 0 not recorded, 1 recorded, 2 recorded
-- and the user's first recorded watch of the day.
-- Keep in step with core.rs, the embedded store's copy of these rules.
local t, r, m = KEYS[1], KEYS[2], KEYS[3]
local max_items = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local today = ARGV[3]
local count = (#ARGV - 3) / 3
local out = {}
if redis.call('HGET', m, 'paused') == '1' then
  for i = 1, count do out[i] = 0 end
  return out
end
local cleared_at = tonumber(redis.call('HGET', m, 'cleared_at') or '-1')
local new_day = redis.call('HGET', m, 'day') ~= today
local recorded_any, first_given = false, false
for i = 1, count do
  local base = 3 + (i - 1) * 3
  local item, view_at, record = ARGV[base + 1], tonumber(ARGV[base + 2]), ARGV[base + 3]
  local status = 0
  if view_at > cleared_at then
    local deleted_at = redis.call('HGET', m, 'd:' .. item)
    if not deleted_at or view_at > tonumber(deleted_at) then
      local current = redis.call('ZSCORE', t, item)
      if not current or view_at > tonumber(current) then
        redis.call('ZADD', t, view_at, item)
        redis.call('HSET', r, item, record)
        recorded_any = true
        status = 1
        if new_day and not first_given then
          first_given = true
          status = 2
        end
      end
    end
  end
  out[i] = status
end
if recorded_any then
  if first_given then redis.call('HSET', m, 'day', today) end
  local excess = redis.call('ZCARD', t) - max_items
  while excess > 0 do
    local chunk = math.min(excess, 1000)
    local oldest = redis.call('ZRANGE', t, 0, chunk - 1)
    redis.call('ZREMRANGEBYRANK', t, 0, chunk - 1)
    redis.call('HDEL', r, unpack(oldest))
    excess = excess - chunk
  end
  redis.call('EXPIRE', t, ttl)
  redis.call('EXPIRE', r, ttl)
  redis.call('EXPIRE', m, ttl)
end
return out
