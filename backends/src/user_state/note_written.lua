-- histflow job note: after the job wrote a user's records to HBase, counts
-- it in the user's meta (if the user has one), which voids any "HBase holds
-- nothing more" note (`hbase_checked`) of the read path; and releases the
-- references it re-read (`marks.lua`): shipped at or below the version
-- written, their kept copies are needed no more.
-- KEYS: h:{uid}:m (meta), h:{uid}:s (shipped), h:{uid}:p (pending),
-- h:{uid}:k (kept). ARGV: pairs of item, view_at written. Returns 0.
local m, s, p, k = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
if redis.call('EXISTS', m) == 1 then redis.call('HINCRBY', m, 'hbase_written', 1) end
for i = 1, #ARGV, 2 do
  local item = ARGV[i]
  local shipped = redis.call('HGET', s, item)
  if shipped and tonumber(shipped) <= tonumber(ARGV[i + 1]) then
    redis.call('HDEL', s, item)
    if redis.call('HEXISTS', p, item) == 0 then redis.call('HDEL', k, item) end
  end
end
return 0
