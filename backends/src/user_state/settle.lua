-- histflow settle: after a flush reached Kafka, removes the marks it
-- carried (`marks.lua`), for one or more users.
-- KEYS: per user h:{uid}:p, h:{uid}:k and its re-drive index (its
-- shard's on one Redis, its slot's on a cluster: `record.lua`).
-- ARGV: per user: its count n, then n times field, version, whole ('1': the
-- flush carried the whole record or the mutation; '0': a reference the job
-- must still re-read).
-- A mark goes only if its version is at or below the one carried: a newer
-- view of the item, acknowledged meanwhile, keeps it. A reference becomes
-- a shipped reference (the record must stay readable until the job wrote
-- it); a whole record or a mutation needs nothing more from Redis.
-- A user left with no pending mark leaves the index in the same atomic
-- step (a later write that marks it again indexes it again).
-- Returns nothing.
local call, tonumber = redis.call, tonumber
local arg = 1
for user = 0, #KEYS / 3 - 1 do
  local p, k, index = KEYS[user * 3 + 1], KEYS[user * 3 + 2], KEYS[user * 3 + 3]
  local count = tonumber(ARGV[arg])
  arg = arg + 1
  for _ = 1, count do
    local field, version, whole = ARGV[arg], tonumber(ARGV[arg + 1]), ARGV[arg + 2] == '1'
    arg = arg + 3
    local pending = call('HGET', p, field)
    if pending and mark_version(pending) <= version then
      if whole then
        call('HDEL', p, field)
        -- Only a kept mark's record has a copy in k (`marks.lua`).
        if mark_kept(pending) then call('HDEL', k, field) end
      else
        -- Set before the mark goes, so the hash never empties between
        -- (it keeps its expiry).
        call('HSET', p, shipped_field(field), version)
        call('HDEL', p, field)
      end
    elseif whole and not pending then
      local shipped = call('HGET', p, shipped_field(field))
      if shipped and tonumber(shipped) <= version then
        call('HDEL', p, shipped_field(field))
        call('HDEL', k, field)
      end
    end
  end
  if pending_left(p) == 0 then call('ZREM', index, string.match(p, '{(.*)}')) end
end
return nil
