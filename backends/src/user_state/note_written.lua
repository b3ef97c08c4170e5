-- histflow job note: after the job wrote users' records to HBase, counts
-- each in its meta (if it has one), which voids any "HBase holds nothing
-- more" note (`hbase_checked`) of the read path; and releases the
-- references it re-read (`marks.lua`): shipped at or below the version
-- written, their kept copies are needed no more. Many users a call (a
-- cluster caller groups users of one slot), so the job's release is not a
-- round trip per user.
-- KEYS: per user h:{uid}:m (meta), h:{uid}:p (pending marks and shipped
-- references), h:{uid}:k (kept). ARGV: per user its count n, then n pairs
-- of item, view_at written. Returns 0.
local call, tonumber = redis.call, tonumber
local arg = 1
for user = 0, #KEYS / 3 - 1 do
  local m, p, k = KEYS[user * 3 + 1], KEYS[user * 3 + 2], KEYS[user * 3 + 3]
  -- Counted only in a meta hash that exists: a count of 1 is the first,
  -- and if it is the hash's only field the count made the hash (any meta
  -- of a user has other fields), which goes again. One call per user.
  if call('HINCRBY', m, 'hbase_written', 1) == 1 and call('HLEN', m) == 1 then call('DEL', m) end
  local count = tonumber(ARGV[arg])
  arg = arg + 1
  for _ = 1, count do
    local item, written = ARGV[arg], ARGV[arg + 1]
    arg = arg + 2
    local field = shipped_field(item)
    local shipped = call('HGET', p, field)
    if shipped and tonumber(shipped) <= tonumber(written) then
      call('HDEL', p, field)
      if call('HEXISTS', p, item) == 0 then call('HDEL', k, item) end
    end
  end
end
return 0
