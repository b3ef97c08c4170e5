-- histflow re-drive look-up on a Redis Cluster: the users due in the
-- re-drive indexes of some hash slots of one node, and how many those
-- indexes hold (`redrive_index.rs`).
-- KEYS: the slots' indexes, h:marked:{tag}.
-- ARGV[1] = due (unix ms: entries scored at or before it are due),
-- ARGV[2] = most users answered.
-- Returns { users indexed, the oldest entry's score (-1: none), then the
-- due users' uids, the first slots' first }. An empty index (most, in
-- most slots) costs one look; its keeper (`marks.lua`) is no user.
local due, room = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = { 0, -1 }
local users, oldest = 0, -1
for _, index in ipairs(KEYS) do
  local first = redis.call('ZRANGE', index, 0, 0, 'WITHSCORES')
  if first[1] and first[1] ~= INDEX_KEEPER then
    local at = tonumber(first[2])
    users = users + redis.call('ZCOUNT', index, '-inf', '(+inf')
    if oldest < 0 or at < oldest then oldest = at end
    if at <= due and room > 0 then
      local found = redis.call('ZRANGEBYSCORE', index, '-inf', due, 'LIMIT', 0, room)
      for _, uid in ipairs(found) do out[#out + 1] = uid end
      room = room - #found
    end
  end
end
out[1], out[2] = users, oldest
return out
