-- histflow realtime write: the events of one or more users, each user's
-- events applied atomically (the whole call is atomic).
-- KEYS: per user, three keys, all hash-tagged by that user (so a Redis
-- Cluster keeps them in one slot; a cluster caller only groups users of
-- the same slot into one call):
--   h:{uid}:t  timeline ZSET (member item, score view_at)
--   h:{uid}:r  records HASH  (item -> encoded record)
--   h:{uid}:m  meta HASH     (its fields: `meta.rs`; this script reads
--              paused, cleared_at, day, d:<item> and writes day,
--              trimmed_at)
-- ARGV[1] = max items kept, ARGV[2] = key TTL seconds, ARGV[3] = today
-- (UTC day number), ARGV[4] = now (unix ms); then per user: its event
-- count n, then n times item, view_at, record.
-- Returns one status per event, in order: 0 not recorded, 1 recorded,
-- 2 recorded and the user's first recorded watch of the day; 3 and 4 are
-- 1 and 2 for a report this same call trimmed at once (a backdated view of
-- a full timeline): recorded, but only HBase will hold it, so its record
-- must travel whole (nothing is left in Redis to re-read).
-- Keep in step with rules.rs, the embedded store's copy of these rules.
local max_items = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local today = ARGV[3]
local now = ARGV[4]
local out = {}
local arg = 5

local function write_user(t, r, m, count)
  -- One read of everything the decision needs: pause, clear, day, and each
  -- event's delete marker.
  local fields = { 'paused', 'cleared_at', 'day' }
  for i = 1, count do fields[3 + i] = 'd:' .. ARGV[arg + (i - 1) * 3] end
  local meta = redis.call('HMGET', m, unpack(fields))
  local paused = meta[1] == '1'
  local cleared_at = tonumber(meta[2] or '-1')
  local new_day = meta[3] ~= today
  local recorded_any, first_given = false, false
  -- Where this user's events start in ARGV and in out[].
  local first_arg, first_out = arg, #out + 1
  for i = 1, count do
    local item, view_at, record = ARGV[arg], tonumber(ARGV[arg + 1]), ARGV[arg + 2]
    arg = arg + 3
    local deleted_at = meta[3 + i]
    local status = 0
    -- ZADD GT CH answers 1 only when the item is new or strictly newer.
    if not paused and view_at > cleared_at and (not deleted_at or view_at > tonumber(deleted_at))
       and redis.call('ZADD', t, 'GT', 'CH', view_at, item) == 1 then
      redis.call('HSET', r, item, record)
      recorded_any = true
      status = 1
      if new_day and not first_given then
        first_given = true
        status = 2
      end
    end
    out[#out + 1] = status
  end
  if recorded_any then
    local excess = redis.call('ZCARD', t) - max_items
    if excess > 0 then
      -- Items now only in HBase: a read that runs past Redis must look
      -- there again (the read path's `hbase_checked` names the trim it saw).
      redis.call('HSET', m, 'trimmed_at', now)
    end
    local trimmed = nil
    while excess > 0 do
      local chunk = math.min(excess, 1000)
      local oldest = redis.call('ZRANGE', t, 0, chunk - 1)
      redis.call('ZREMRANGEBYRANK', t, 0, chunk - 1)
      redis.call('HDEL', r, unpack(oldest))
      trimmed = trimmed or {}
      for _, item in ipairs(oldest) do trimmed[item] = true end
      excess = excess - chunk
    end
    if trimmed then
      for i = 0, count - 1 do
        local at = first_out + i
        if out[at] > 0 and trimmed[ARGV[first_arg + i * 3]] then out[at] = out[at] + 2 end
      end
    end
    -- Expiry counts days of inactivity: refreshing it on the user's first
    -- write of each day keeps it exact to the day at a fraction of the cost.
    -- Keys remade later in the day (after a clear) get theirs at once.
    if first_given or redis.call('TTL', t) == -1 then
      redis.call('HSET', m, 'day', today)
      redis.call('EXPIRE', t, ttl)
      redis.call('EXPIRE', r, ttl)
      redis.call('EXPIRE', m, ttl)
    end
  end
end

for user = 1, #KEYS / 3 do
  local count = tonumber(ARGV[arg])
  arg = arg + 1
  write_user(KEYS[user * 3 - 2], KEYS[user * 3 - 1], KEYS[user * 3], count)
end
return out
