-- histflow settle: after a flush reached Kafka, removes the marks it
-- carried (`marks.lua`), for one or more users.
-- KEYS: per user h:{uid}:p, h:{uid}:s, h:{uid}:k.
-- ARGV[1] = key TTL seconds; ARGV[2] = the users' pending index (their
-- shard's), or '' when the caller unindexes them (on a cluster the index
-- is in another slot); then per user: its count n, then n times field,
-- version, whole ('1': the flush carried the whole record or the
-- mutation; '0': a reference the job must still re-read).
-- A mark goes only if its version is at or below the one carried: a newer
-- view of the item, acknowledged meanwhile, keeps it. A reference moves
-- the item to shipped (the record must stay readable until the job wrote
-- it); a whole record or a mutation needs nothing more from Redis.
-- A user left with no pending mark leaves the index in the same atomic
-- step (a later write that marks it again indexes it again).
-- Returns per user how many marks are still pending.
local ttl = tonumber(ARGV[1])
local index = ARGV[2]
local arg = 3
local out = {}
for user = 0, #KEYS / 3 - 1 do
  local p, s, k = KEYS[user * 3 + 1], KEYS[user * 3 + 2], KEYS[user * 3 + 3]
  local count = tonumber(ARGV[arg])
  arg = arg + 1
  for _ = 1, count do
    local field, version, whole = ARGV[arg], tonumber(ARGV[arg + 1]), ARGV[arg + 2] == '1'
    arg = arg + 3
    local pending = redis.call('HGET', p, field)
    if pending and mark_version(pending) <= version then
      redis.call('HDEL', p, field)
      if whole then
        redis.call('HDEL', k, field)
      else
        redis.call('HSET', s, field, version)
        redis.call('EXPIRE', s, ttl)
      end
    elseif whole and not pending then
      local shipped = redis.call('HGET', s, field)
      if shipped and tonumber(shipped) <= version then
        redis.call('HDEL', s, field)
        redis.call('HDEL', k, field)
      end
    end
  end
  local left = redis.call('HLEN', p)
  if left == 0 and index ~= '' then redis.call('ZREM', index, string.match(p, '{(.*)}')) end
  out[#out + 1] = left
end
return out
