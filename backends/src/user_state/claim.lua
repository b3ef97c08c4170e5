-- histflow re-drive claim: takes over the pending marks older than the
-- grace (`marks.lua`) of one or more users, so they can be shipped again,
-- and stamps them claimed now, so no other instance claims them again
-- within the grace.
-- KEYS: per user h:{uid}:p, h:{uid}:r, h:{uid}:k, h:{uid}:m.
-- ARGV[1] = grace ms, ARGV[2] = most marks claimed of one user, then per
-- user the re-drive index it was found in, to keep in the same step (due
-- again when its oldest mark is; left when it has none), or '' when the
-- caller keeps it (an index in another slot: `redrive_index.rs`).
-- Returns, per user in order: oldest, the count n of marks claimed, then
-- n times field, version, payload. oldest is the marked_at of the oldest
-- mark still pending after the claim (-1: none); payload is the item's
-- record (from the records, else the kept copy; false when neither holds
-- it any more: expired), the paused flag for '~switch', and '' for a
-- clear or a delete.
-- Every user's marks are read before any is stamped: a cluster call
-- carrying users of several slots of one node (`marks.lua`) stops at the
-- first key of a slot that has moved to another node, and it must then
-- have claimed nothing (the caller claims those users again by slot).
local call, tonumber = redis.call, tonumber
local now = mark_clock()
local cutoff = now - tonumber(ARGV[1])
local most = tonumber(ARGV[2])
local users = #KEYS / 4
local held = {}
for user = 1, users do held[user] = call('HGETALL', KEYS[user * 4 - 3]) end
local out = {}
for user = 1, users do
  local p, r, k, m = KEYS[user * 4 - 3], KEYS[user * 4 - 2], KEYS[user * 4 - 1], KEYS[user * 4]
  local index = ARGV[2 + user]
  local marks = held[user]
  local room = most
  local head = #out + 1
  out[head] = -1
  out[head + 1] = 0
  local oldest = nil
  for i = 1, #marks, 2 do
    local field, value = marks[i], marks[i + 1]
    -- A shipped reference and the keeper (`marks.lua`) have no
    -- 'version,marked_at' value: no version here, so neither is claimed
    -- nor counted.
    local version, at = mark_version(value), mark_at(value)
    if version and at <= cutoff and room > 0 then
      room = room - 1
      local payload = ''
      if field == '~switch' then
        payload = call('HGET', m, 'paused') or '0'
      elseif string.sub(field, 1, 1) ~= '~' then
        payload = call('HGET', r, field) or call('HGET', k, field)
      end
      if payload then
        -- Still a kept mark if it was one (its settle drops the kept copy).
        call('HSET', p, field, mark_value(version, now) .. (mark_kept(value) and KEPT or ''))
        at = now
      else
        -- Nothing left to ship (the keys expired): the mark says nothing.
        call('HDEL', p, field)
        at = nil
      end
      out[#out + 1] = field
      out[#out + 1] = version
      out[#out + 1] = payload
      out[head + 1] = out[head + 1] + 1
    end
    if version and at and (not oldest or at < oldest) then oldest = at end
  end
  out[head] = oldest or -1
  if index ~= '' then
    local uid = string.match(p, '{(.*)}')
    if oldest then
      call('ZADD', index, 'XX', oldest, uid)
    else
      call('ZREM', index, uid)
    end
  end
end
return out
