-- histflow history page: one read of a user's timeline, from the newest
-- view at or below a bound, plus the meta a page needs. No string is
-- compared here (Redis Lua compares with the server's locale); the caller
-- skips the tied members it already returned, which come first.
-- KEYS: h:{uid}:t (timeline), h:{uid}:m (meta), h:{uid}:r (records).
-- ARGV[1] = highest score ('+inf' or a view_at), ARGV[2] = the cursor's
-- view_at whose ties to include on top of the count ('' for none),
-- ARGV[3] = offset, ARGV[4] = count, ARGV[5..] = the meta fields to read
-- (`meta.rs` lists them, and parses the answer in that order).
-- Returns {fields, ties, exists, members, records}: the meta fields' values
-- ('' where absent), members
-- as item, score, item, score, ... and each member's record (nil if none),
-- so a page costs one round trip.
local t, m, r = KEYS[1], KEYS[2], KEYS[3]
local names = {}
for i = 5, #ARGV do names[#names + 1] = ARGV[i] end
local meta = redis.call('HMGET', m, unpack(names))
local fields = {}
for i = 1, #names do fields[i] = meta[i] or '' end
local ties = 0
if ARGV[2] ~= '' then ties = redis.call('ZCOUNT', t, ARGV[2], ARGV[2]) end
local members = redis.call('ZREVRANGEBYSCORE', t, ARGV[1], '-inf', 'WITHSCORES', 'LIMIT', ARGV[3], tonumber(ARGV[4]) + ties)
local exists = redis.call('EXISTS', t, m)
local records = {}
if #members > 0 then
  local items = {}
  for i = 1, #members, 2 do items[#items + 1] = members[i] end
  records = redis.call('HMGET', r, unpack(items))
end
return { fields, ties, exists, members, records }
