-- histflow re-drive look-up on a Redis Cluster: the users due in the
-- re-drive indexes of some hash slots of one node (`redrive_index.rs`).
-- KEYS: the slots' indexes, h:marked:{tag}.
-- ARGV[1] = due (unix ms: entries scored at or before it are due),
-- ARGV[2] = most users answered.
-- Returns the due users' uids, the first slots' first.
local due, room = ARGV[1], tonumber(ARGV[2])
local out = {}
for _, index in ipairs(KEYS) do
  if room <= 0 then break end
  local users = redis.call('ZRANGEBYSCORE', index, '-inf', due, 'LIMIT', 0, room)
  for _, uid in ipairs(users) do out[#out + 1] = uid end
  room = room - #users
end
return out
