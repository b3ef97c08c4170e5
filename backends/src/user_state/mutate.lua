-- histflow realtime mutation: a delete, a clear or a recording switch of
-- one user, applied atomically. Keep in step with rules.rs (the embedded
-- store's copy of these rules).
-- KEYS: h:{uid}:t (timeline), h:{uid}:r (records), h:{uid}:m (meta),
-- then the marks h:{uid}:p, h:{uid}:k (`marks.lua`): the
-- mutation is marked pending in the same call, and what it removes needs
-- no shipping any more.
-- ARGV[1] = kind ('delete' | 'clear' | 'clear_business' | 'pause' |
-- 'resume'), ARGV[2] = at (unix ms), ARGV[3] = key TTL seconds, ARGV[4] =
-- the user's re-drive index to keep marks (`record.lua`: the user is
-- added to it in the same step as its mark), '' to keep none, ARGV[5] =
-- the item (delete) or the business (clear_business).
-- Returns the effective time: a delete or clear hides every view at or
-- before it, so it is moved past the newest view it removes (a report
-- stamped by a fast client clock is removed too); the same time goes to
-- HBase, so both hide the same views.
local t, r, m, p, k = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local kind, at, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])

local function keep_meta()
  -- A paused user's meta never expires: a paused user records nothing, so
  -- nothing would refresh it, and the pause would lapse with it.
  if redis.call('HGET', m, 'paused') == '1' then
    redis.call('PERSIST', m)
  elseif redis.call('TTL', m) < 0 then
    -- A meta hash made here (the user had none), or one a pause kept,
    -- expires like the others again.
    redis.call('EXPIRE', m, ttl)
  end
end

local index = ARGV[4]

local function mark(field, version)
  if index == '' then return end
  local now = mark_clock()
  redis.call('HSET', p, field, mark_value(version, now))
  redis.call('EXPIRE', p, ttl)
  index_user(index, now, string.match(p, '{(.*)}'))
end

if kind == 'delete' then
  local item = ARGV[5]
  local field = 'd:' .. item
  local current = tonumber(redis.call('ZSCORE', t, item) or '-1')
  local marked = tonumber(redis.call('HGET', m, field) or '-1')
  local effective = math.max(at, current, marked)
  redis.call('HSET', m, field, effective)
  redis.call('ZREM', t, item)
  redis.call('HDEL', r, item)
  redis.call('HDEL', p, item, shipped_field(item))
  redis.call('HDEL', k, item)
  mark('~del|' .. item, effective)
  keep_meta()
  return effective
elseif kind == 'clear' then
  local newest = redis.call('ZREVRANGE', t, 0, 0, 'WITHSCORES')
  local effective = math.max(at, tonumber(newest[2] or '-1'), tonumber(redis.call('HGET', m, 'cleared_at') or '-1'))
  redis.call('HSET', m, 'cleared_at', effective)
  redis.call('DEL', t, r, k)
  -- Every pending view and shipped reference is cleared; what is left to
  -- ship is the clear (and a recording switch, which the clear does not
  -- undo).
  local switch = redis.call('HGET', p, '~switch')
  redis.call('DEL', p)
  if switch then redis.call('HSET', p, '~switch', switch) end
  mark('~clear', effective)
  -- Delete and business-clear markers at or before the clear say
  -- nothing more.
  local meta = redis.call('HGETALL', m)
  for i = 1, #meta, 2 do
    local kind = string.sub(meta[i], 1, 2)
    if (kind == 'd:' or kind == 'c:') and tonumber(meta[i + 1]) <= effective then
      redis.call('HDEL', m, meta[i])
    end
  end
  keep_meta()
  return effective
elseif kind == 'clear_business' then
  -- Like a clear, for the items `business:*` only: marker `c:business`.
  local business = ARGV[5]
  local prefix = business .. ':'
  local function ours(item) return string.sub(item, 1, #prefix) == prefix end
  local gone, newest = {}, -1
  local members = redis.call('ZRANGE', t, 0, -1, 'WITHSCORES')
  for i = 1, #members, 2 do
    if ours(members[i]) then
      gone[#gone + 1] = members[i]
      newest = math.max(newest, tonumber(members[i + 1]))
    end
  end
  -- Pending views, shipped references and kept copies of the business's
  -- items no longer in the timeline (trimmed) go too.
  local seen = {}
  for _, item in ipairs(gone) do seen[item] = true end
  for _, key in ipairs({ p, k }) do
    for _, field in ipairs(redis.call('HKEYS', key)) do
      local item = shipped_item(field) or field
      if ours(item) and not seen[item] then
        seen[item] = true
        gone[#gone + 1] = item
      end
    end
  end
  local field = 'c:' .. business
  local effective = math.max(at, newest, tonumber(redis.call('HGET', m, field) or '-1'))
  redis.call('HSET', m, field, effective)
  for first = 1, #gone, 1000 do
    local chunk = { unpack(gone, first, math.min(first + 999, #gone)) }
    redis.call('ZREM', t, unpack(chunk))
    for _, key in ipairs({ r, k }) do redis.call('HDEL', key, unpack(chunk)) end
    -- Their marks and shipped references, in one call.
    local fields = { unpack(chunk) }
    for _, item in ipairs(chunk) do fields[#fields + 1] = shipped_field(item) end
    redis.call('HDEL', p, unpack(fields))
  end
  mark('~clear|' .. business, effective)
  -- The business's delete markers at or before the clear say nothing more.
  local meta = redis.call('HKEYS', m)
  for _, name in ipairs(meta) do
    if string.sub(name, 1, 2 + #prefix) == 'd:' .. prefix and tonumber(redis.call('HGET', m, name)) <= effective then
      redis.call('HDEL', m, name)
    end
  end
  keep_meta()
  return effective
elseif kind == 'pause' or kind == 'resume' then
  redis.call('HSET', m, 'paused', kind == 'pause' and '1' or '0')
  mark('~switch', at)
  keep_meta()
  return at
end
return redis.error_reply('unknown mutation ' .. tostring(kind))
