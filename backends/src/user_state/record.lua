-- histflow realtime write: the events of one or more users, each user's
-- events applied atomically (the whole call is atomic).
-- KEYS: per user, six keys, all hash-tagged by that user (so a Redis
-- Cluster keeps them in one slot; a cluster caller only groups users of
-- the same slot into one call):
--   h:{uid}:t  timeline ZSET (member item, score view_at)
--   h:{uid}:r  records HASH  (item -> encoded record)
--   h:{uid}:m  meta HASH     (its fields: `meta.rs`; this script reads
--              paused, cleared_at, day, d:<item>, c:<business> and
--              writes day, trimmed_at)
--   h:{uid}:p, h:{uid}:s, h:{uid}:k  the marks (`marks.lua`): every
--              recorded event is marked pending in the same call; a record
--              trimmed while marked is kept in k.
-- ARGV[1] = max items kept, ARGV[2] = key TTL seconds, ARGV[3] = today
-- (UTC day number), ARGV[4] = now (unix ms), ARGV[5] = '1' to keep marks
-- (something downstream settles them); then per user: its event count n,
-- then n times item, view_at, record.
-- Returns one status per event, in order: 0 not recorded, 1 recorded,
-- 2 recorded and the user's first recorded watch of the day; 3 and 4 are
-- 1 and 2 for a report this same call trimmed at once (a backdated view of
-- a full timeline): recorded, but only HBase will hold it, so its record
-- must travel whole (nothing is left in Redis to re-read); its record is
-- kept in k until it is delivered.
-- Keep in step with rules.rs, the embedded store's copy of these rules.
local max_items = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local today = ARGV[3]
local now = ARGV[4]
local out = {}
local marking = ARGV[5] == '1'
local arg = 6
local marked_at = marking and mark_clock()

local function write_user(t, r, m, p, s, k, count)
  -- One read of everything the decision needs: pause, clear, day, each
  -- event's delete marker and each business's clear marker (once per
  -- business).
  local fields = { 'paused', 'cleared_at', 'day' }
  local business_field = {}
  local event_business = {}
  for i = 1, count do fields[3 + i] = 'd:' .. ARGV[arg + (i - 1) * 3] end
  for i = 1, count do
    local business = string.match(ARGV[arg + (i - 1) * 3], '^[^:]*')
    if not business_field[business] then
      fields[#fields + 1] = 'c:' .. business
      business_field[business] = #fields
    end
    event_business[i] = business_field[business]
  end
  local meta = redis.call('HMGET', m, unpack(fields))
  local paused = meta[1] == '1'
  local cleared_at = tonumber(meta[2] or '-1')
  local new_day = meta[3] ~= today
  local recorded_any, first_given = false, false
  -- Where this user's events start in ARGV and in out[].
  local first_arg, first_out = arg, #out + 1
  local has_kept = redis.call('EXISTS', k) == 1
  for i = 1, count do
    local item, view_at, record = ARGV[arg], tonumber(ARGV[arg + 1]), ARGV[arg + 2]
    arg = arg + 3
    local deleted_at = meta[3 + i]
    local business_cleared_at = meta[event_business[i]]
    local status = 0
    -- ZADD GT CH answers 1 only when the item is new or strictly newer.
    if not paused and view_at > cleared_at and (not deleted_at or view_at > tonumber(deleted_at))
       and (not business_cleared_at or view_at > tonumber(business_cleared_at))
       and redis.call('ZADD', t, 'GT', 'CH', view_at, item) == 1 then
      redis.call('HSET', r, item, record)
      if marking then redis.call('HSET', p, item, mark_value(view_at, marked_at)) end
      -- A kept copy of an older view is superseded.
      if has_kept then redis.call('HDEL', k, item) end
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
      -- A trimmed record still marked pending or shipped is kept: a
      -- re-drive or the job still needs it.
      local pending = redis.call('HMGET', p, unpack(oldest))
      local shipped = redis.call('HMGET', s, unpack(oldest))
      local keep = {}
      for j, item in ipairs(oldest) do
        if pending[j] or shipped[j] then keep[#keep + 1] = item end
      end
      if #keep > 0 then
        local records = redis.call('HMGET', r, unpack(keep))
        for j, item in ipairs(keep) do
          if records[j] then redis.call('HSET', k, item, records[j]) end
        end
        redis.call('EXPIRE', k, ttl)
      end
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
    if marking then redis.call('EXPIRE', p, ttl) end
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

for user = 0, #KEYS / 6 - 1 do
  local count = tonumber(ARGV[arg])
  arg = arg + 1
  local at = user * 6
  write_user(KEYS[at + 1], KEYS[at + 2], KEYS[at + 3], KEYS[at + 4], KEYS[at + 5], KEYS[at + 6], count)
end
return out
