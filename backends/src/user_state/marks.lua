-- histflow marks: helpers prepended to every script that keeps them
-- (`redis.rs` joins this file with the script). A user's marks live in
-- three keys hash-tagged by the user, beside its timeline:
--   h:{uid}:p  pending HASH: what a service acknowledged and has not yet
--              handed to Kafka. Field: an item key, '~clear', '~switch' or
--              '~del|<item>'; value 'version,marked_at': the item's view_at
--              (or the mutation's effective time), and when it was marked
--              or last claimed by a re-drive (Redis TIME, ms).
--   h:{uid}:s  shipped HASH: item -> version, references (`ids` payload)
--              handed to Kafka that the job has not yet written to HBase.
--   h:{uid}:k  kept HASH: item -> record, records trimmed from the
--              timeline while p or s still named them (the job or a
--              re-drive still needs them).
-- A mark is removed only when a delivered flush (or, for references, the
-- job's write) carried the item at its version or newer: versions only
-- grow per item (ZADD GT, and deletes and clears move past the views they
-- remove), so several instances settle each other's marks safely.
local function mark_clock()
  local now = redis.call('TIME')
  return tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
end
local function mark_value(version, at)
  return string.format('%d,%d', version, at)
end
local function mark_version(value)
  return tonumber(string.match(value, '^(%d+),'))
end
local function mark_at(value)
  return tonumber(string.match(value, ',(%d+)$'))
end
