-- histflow re-drive claim: takes over a user's pending marks older than
-- the grace (`marks.lua`), so they can be shipped again, and stamps them
-- claimed now, so no other instance claims them again within the grace.
-- KEYS: h:{uid}:p, h:{uid}:r, h:{uid}:k, h:{uid}:m.
-- ARGV[1] = grace ms, ARGV[2] = most marks claimed in one call, ARGV[3] =
-- the re-drive index the user was found in, to keep in the same step
-- (due again when its oldest mark is; left when it has none), or '' when
-- the caller keeps it (an index in another slot: `redrive_index.rs`).
-- Returns { oldest, then per claimed mark: field, version, payload }:
-- oldest is the marked_at of the oldest mark still pending after the claim
-- (-1: none); payload is the item's record (from the records, else the
-- kept copy; false when neither holds it any more: expired), the paused
-- flag for '~switch', and '' for a clear or a delete.
local p, r, k, m = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = mark_clock()
local cutoff = now - tonumber(ARGV[1])
local room = tonumber(ARGV[2])
local index = ARGV[3]
local out = { -1 }
local oldest = nil
local marks = redis.call('HGETALL', p)
for i = 1, #marks, 2 do
  local field, value = marks[i], marks[i + 1]
  -- A shipped reference and the keeper (`marks.lua`) have no
  -- 'version,marked_at' value: no version here, so neither is claimed nor
  -- counted.
  local version, at = mark_version(value), mark_at(value)
  if version and at <= cutoff and room > 0 then
    room = room - 1
    local payload = ''
    if field == '~switch' then
      payload = redis.call('HGET', m, 'paused') or '0'
    elseif string.sub(field, 1, 1) ~= '~' then
      payload = redis.call('HGET', r, field) or redis.call('HGET', k, field)
    end
    if payload then
      -- Still a kept mark if it was one (its settle drops the kept copy).
      redis.call('HSET', p, field, mark_value(version, now) .. (mark_kept(value) and KEPT or ''))
      at = now
    else
      -- Nothing left to ship (the keys expired): the mark says nothing.
      redis.call('HDEL', p, field)
      at = nil
    end
    out[#out + 1] = field
    out[#out + 1] = version
    out[#out + 1] = payload
  end
  if version and at and (not oldest or at < oldest) then oldest = at end
end
out[1] = oldest or -1
if index ~= '' then
  local uid = string.match(p, '{(.*)}')
  if oldest then
    redis.call('ZADD', index, 'XX', oldest, uid)
  else
    redis.call('ZREM', index, uid)
  end
end
return out
