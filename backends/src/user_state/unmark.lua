-- histflow dirty marks: after a shard's flush reached Kafka, removes each
-- user from the shard's dirty set unless it was marked again after the
-- flush. KEYS[1] = h:dirty:{shard}; ARGV[1] = the flush's time (unix ms),
-- ARGV[2..] = uids. Returns how many marks were removed.
local removed = 0
for i = 2, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) <= tonumber(ARGV[1]) then
    removed = removed + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return removed
