-- histflow job release: after the job wrote users' records to HBase,
-- releases the references it re-read (`marks.lua`, `ids` payload):
-- shipped at or below the version written, their kept copies are needed
-- no more. Many users a call (a cluster caller groups users of one node),
-- so the job's release is not a round trip per user.
-- KEYS: per user h:{uid}:p (pending marks and shipped references),
-- h:{uid}:k (kept). ARGV: per user its count n, then n pairs of item,
-- view_at written. Returns 0.
local call, tonumber = redis.call, tonumber
local arg = 1
for user = 0, #KEYS / 2 - 1 do
  local p, k = KEYS[user * 2 + 1], KEYS[user * 2 + 2]
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
