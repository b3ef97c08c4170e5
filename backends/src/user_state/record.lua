-- histflow realtime write: the events of one or more users, each user's
-- events applied atomically (the whole call is atomic).
-- KEYS: per user, its timeline key h:{uid}:t. Its other keys are named
-- from it (`model::keys`), all hash-tagged by the user, so a Redis Cluster
-- keeps them in the declared key's slot (a cluster caller only groups
-- users of the same slot into one call):
--   h:{uid}:t  timeline ZSET (member item, score view_at)
--   h:{uid}:r  records HASH  (item -> encoded record)
--   h:{uid}:m  meta HASH     (its fields: `meta.rs`; this script reads
--              paused, cleared_at, day, kept, d:<item>, c:<business> and
--              writes day, trimmed_at, kept)
--   h:{uid}:p, h:{uid}:k  the marks (`marks.lua`): every recorded event
--              is marked pending in the same call; a record trimmed while
--              marked (or shipped by reference) is kept in k.
-- ARGV[1] = max items kept, ARGV[2] = key TTL seconds, ARGV[3] = today
-- (UTC day number), ARGV[4] = now (unix ms), ARGV[5] = '1' to keep marks
-- (something downstream settles them), ARGV[6] = how many pending index
-- keys follow, then those keys (`model::keys::user_pending_index`: on one
-- Redis its shard's, on a cluster its slot's, so always a key this call
-- may touch); then per user: its event count n, the position of its index
-- among those keys (0: none), then n times item, view_at, record. A user
-- given a new mark here is added to its index (ZADD NX, score now) in the
-- same step: a user with marks is always indexed, so a mark only
-- overwritten needs no index write.
-- Returns one status per event, in order: 0 not recorded, 1 recorded,
-- 2 recorded and the user's first recorded watch of the day; 3 and 4 are
-- 1 and 2 for a report this same call trimmed at once (a backdated view of
-- a full timeline): recorded, but only HBase will hold it, so its record
-- must travel whole (nothing is left in Redis to re-read); its record is
-- kept in k until it is delivered.
-- Keep in step with rules.rs, the embedded store's copy of these rules.
-- Globals read per event, as locals (a global is a table look-up).
local ARGV, call, tonumber, sub, find = ARGV, redis.call, tonumber, string.sub, string.find
local max_items = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local today = ARGV[3]
local now = ARGV[4]
local out = {}
local answered = 0
local marking = ARGV[5] == '1'
local indexes = {}
for i = 1, tonumber(ARGV[6]) do indexes[i] = ARGV[6 + i] end
local arg = 7 + #indexes
-- Every mark of this call is `mark_value(view_at, now)`: its ',now' part
-- is made once, and view_at's digits are taken as sent.
local mark_suffix = marking and string.format(',%d', mark_clock())

-- The business of an item key business:oid (`model::keys`).
local function business_of(item)
  return sub(item, 1, (find(item, ':', 1, true) or 0) - 1)
end
-- `event_field` of a user with one event (most users of a call).
local ONE_EVENT = { 5, 6 }

-- One read of everything a user's decision needs: pause, clear, day,
-- whether records were ever kept, each event's delete marker and each
-- business's clear marker (once per business), for the `count` events
-- from ARGV[first]. Answers the meta's values and `event_field`:
-- event_field[i] and event_field[count + i] are where event i's delete
-- marker and its business's clear marker are among them.
local function read_meta(m, count, first)
  local fields
  local event_field = ONE_EVENT
  if count == 1 then
    local item = ARGV[first]
    fields = { 'paused', 'cleared_at', 'day', 'kept', 'd:' .. item, 'c:' .. business_of(item) }
  else
    fields = { 'paused', 'cleared_at', 'day', 'kept' }
    event_field = {}
    local business_field = {}
    local n = 4
    for i = 1, count do
      local item = ARGV[first + (i - 1) * 3]
      n = n + 1
      fields[n] = 'd:' .. item
      event_field[i] = n
      local business = business_of(item)
      local at = business_field[business]
      if not at then
        n = n + 1
        fields[n] = 'c:' .. business
        at = n
        business_field[business] = at
      end
      event_field[count + i] = at
    end
  end
  return call('HMGET', m, unpack(fields)), event_field
end

local function write_user(t, count, index, meta, event_field)
  -- h:{uid}: and the keys every write touches.
  local base = sub(t, 1, -2)
  local r, m, p = base .. 'r', base .. 'm', base .. 'p'
  local paused = meta[1] == '1'
  local cleared_at = tonumber(meta[2] or '-1')
  local new_day = meta[3] ~= today
  -- Set when a trim first kept a record: only then can a kept copy need
  -- superseding (a stale flag costs an HDEL of nothing).
  local has_kept = meta[4] == '1'
  -- new_mark: a mark's field is new (the user may be out of the index);
  -- made_p: this call made p anew (`marks.lua`: '~keep'), so it expires.
  local first_given, new_item, new_mark, made_p = false, false, false, false
  -- Where this user's events start in ARGV and in out[].
  local first_arg, first_out = arg, answered + 1
  for i = 1, count do
    local item, view_text, record = ARGV[arg], ARGV[arg + 1], ARGV[arg + 2]
    local view_at = tonumber(view_text)
    arg = arg + 3
    local deleted_at = meta[event_field[i]]
    local business_cleared_at = meta[event_field[count + i]]
    local status = 0
    -- ZADD GT CH answers 1 only when the item is new or strictly newer.
    if not paused and view_at > cleared_at and (not deleted_at or view_at > tonumber(deleted_at))
       and (not business_cleared_at or view_at > tonumber(business_cleared_at))
       and call('ZADD', t, 'GT', 'CH', view_text, item) == 1 then
      -- A new field is a new item: the timeline grew (or was made anew).
      if call('HSET', r, item, record) == 1 then new_item = true end
      if marking then
        -- Answers how many of the two fields are new: 2, both (p was
        -- gone, or held no keeper); 1, one of them, the mark or (p made
        -- by a clear, which expires it) the keeper: either may be new
        -- to the index.
        local added = call('HSET', p, item, view_text .. mark_suffix, KEEPER, today)
        if added > 0 then new_mark = true end
        if added == 2 then made_p = true end
      end
      -- A kept copy of an older view is superseded.
      if has_kept then call('HDEL', base .. 'k', item) end
      status = 1
      if new_day and not first_given then
        first_given = true
        status = 2
      end
    end
    answered = answered + 1
    out[answered] = status
  end
  -- Only a new item can take the timeline past its limit; the first
  -- write of the day looks too, so a limit lowered by a reload reaches
  -- every active user within a day even if they watch nothing new.
  if new_item or first_given then
    local excess = call('ZCARD', t) - max_items
    if excess > 0 then
      -- Items now only in HBase: a read that runs past Redis must look
      -- there again (the read path's `hbase_checked` names the trim it saw).
      call('HSET', m, 'trimmed_at', now)
    end
    local trimmed = nil
    while excess > 0 do
      local chunk = math.min(excess, 1000)
      local oldest = call('ZRANGE', t, 0, chunk - 1)
      -- A trimmed record still marked pending or shipped is kept: a
      -- re-drive or the job still needs it. Both are fields of p.
      local named = {}
      for j, item in ipairs(oldest) do
        named[j] = item
        named[#oldest + j] = shipped_field(item)
      end
      named = call('HMGET', p, unpack(named))
      local keep, marked = {}, {}
      for j, item in ipairs(oldest) do
        if named[j] or named[#oldest + j] then
          keep[#keep + 1] = item
          marked[#keep] = named[j]
        end
      end
      if #keep > 0 then
        local records = call('HMGET', r, unpack(keep))
        for j, item in ipairs(keep) do
          if records[j] then
            call('HSET', base .. 'k', item, records[j])
            -- Its settle drops the kept copy (`marks.lua`).
            if marked[j] and not mark_kept(marked[j]) then call('HSET', p, item, marked[j] .. KEPT) end
          end
        end
        call('EXPIRE', base .. 'k', ttl)
        if not has_kept then
          call('HSET', m, 'kept', '1')
          has_kept = true
        end
      end
      call('ZREMRANGEBYRANK', t, 0, chunk - 1)
      call('HDEL', r, unpack(oldest))
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
  end
  if new_mark then
    if made_p then call('EXPIRE', p, ttl) end
    if index then index_user(index, now, string.match(base, '{(.*)}')) end
  end
  -- Expiry counts days of inactivity: refreshing it on the user's first
  -- write of each day keeps it exact to the day at a fraction of the cost.
  -- Keys made anew later in the day (after a clear, a delete of the last
  -- item, or an expiry) hold a new item, and get theirs at once. The three
  -- share one instant, so no write can find one gone and another alive.
  if first_given or (new_item and call('TTL', t) == -1) then
    local expire_at = mark_clock() + ttl * 1000
    call('HSET', m, 'day', today)
    call('PEXPIREAT', t, expire_at)
    call('PEXPIREAT', r, expire_at)
    call('PEXPIREAT', m, expire_at)
    -- p outlives its marks (its keeper), so its expiry is renewed too.
    if marking then call('PEXPIREAT', p, expire_at) end
  end
end

-- Every user's meta is read before any user is written: a cluster call
-- carrying users of several slots of one node (`marks.lua`) stops at the
-- first key of a slot that has moved to another node, and it must then
-- have written nothing (the caller sends the users again by slot).
local users = {}
local at = arg
for user = 1, #KEYS do
  local count = tonumber(ARGV[at])
  local meta, event_field = read_meta(sub(KEYS[user], 1, -2) .. 'm', count, at + 2)
  users[user] = { count, indexes[tonumber(ARGV[at + 1])], meta, event_field, at + 2 }
  at = at + 2 + count * 3
end
for user = 1, #KEYS do
  local read = users[user]
  -- write_user reads its events from ARGV[arg] on.
  arg = read[5]
  write_user(KEYS[user], read[1], read[2], read[3], read[4])
end
return out
