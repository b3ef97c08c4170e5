-- histflow settle: after a flush reached Kafka, removes the marks it
-- carried (`marks.lua`), for one or more users.
-- KEYS: per user h:{uid}:p, h:{uid}:k.
-- ARGV: per user: its count n, then n times field, version, whole ('1': the
-- flush carried the whole record or the mutation; '0': a reference the job
-- must still re-read).
-- A mark goes only if its version is at or below the one carried: a newer
-- view of the item, acknowledged meanwhile, keeps it. A reference becomes
-- a shipped reference (the record must stay readable until the job wrote
-- it); a whole record or a mutation needs nothing more from Redis.
-- A user left with no pending mark stays in its re-drive index: the
-- re-drive's claim takes it out when it comes due with none (`claim.lua`).
-- So a user reporting every few seconds, whose every mark is settled
-- before its next report, costs the index one look a grace, not an add
-- and a removal a report (its writes find it listed: `ZADD NX`).
-- Returns nothing.
local call, tonumber = redis.call, tonumber
local arg = 1
for user = 0, #KEYS / 2 - 1 do
  local p, k = KEYS[user * 2 + 1], KEYS[user * 2 + 2]
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
end
return nil
