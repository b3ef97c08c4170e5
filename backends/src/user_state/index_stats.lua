-- histflow re-drive index sizes on a Redis Cluster: how many users the
-- re-drive indexes of some hash slots of one node hold, and the oldest
-- entry (`redrive_index.rs`).
-- KEYS: the slots' indexes, h:marked:{tag}.
-- Returns { users, oldest score (unix ms; -1: none) }.
local users, oldest = 0, -1
for _, index in ipairs(KEYS) do
  local count = redis.call('ZCARD', index)
  if count > 0 then
    users = users + count
    local first = tonumber(redis.call('ZRANGE', index, 0, 0, 'WITHSCORES')[2])
    if oldest < 0 or first < oldest then oldest = first end
  end
end
return { users, oldest }
