-- histflow marks: helpers prepended to every script that keeps them
-- (`redis.rs` joins this file with the script). A user's marks live in
-- two keys hash-tagged by the user, beside its timeline:
--   h:{uid}:p  pending HASH: what a service acknowledged and has not yet
--              handed to Kafka. Field: an item key, '~clear', '~switch' or
--              '~del|<item>'; value 'version,marked_at': the item's view_at
--              (or the mutation's effective time), and when it was marked
--              or last claimed by a re-drive (Redis TIME, ms).
--              The same hash holds the shipped references, field
--              ':<item>' (SHIPPED then the item; an item key never starts
--              with ':', its business being non-empty), value the version:
--              references (`ids` payload) handed to Kafka that the job has
--              not yet written to HBase. They are not re-driven (Kafka has
--              them), so they do not keep a user in the re-drive index.
--              Keeping them beside the marks makes shipping one a rename
--              inside a hash already touched, not a key made and expired.
--              A mark whose record a trim moved to k says so: ',k' after
--              its value, so only such a mark's settle touches k.
--              Field '~keep' (value: the day it was set) keeps the hash in
--              being while it holds no mark: a write sets it with every
--              mark, and only a write that made it anew (the hash was
--              gone, or a clear had dropped it) sets the hash's expiry;
--              the user's first write of each day renews it with the
--              other keys'. So in the production regime (a user's only
--              mark settled before the next report) a mark costs no
--              EXPIRE and the settle never deletes the hash.
--   h:{uid}:k  kept HASH: item -> record, records trimmed from the
--              timeline while p still named them (as a pending mark or a
--              shipped reference: the job or a re-drive still needs
--              them).
-- A cluster call may carry users of several hash slots of one node. Its
-- keys cannot be declared then (declared keys must share a slot), so it
-- declares none and names them first in ARGV: '@keys', their count,
-- the keys; the script's own arguments follow. Here they become KEYS and
-- ARGV as a call by slot would have them.
local KEYS, ARGV = KEYS, ARGV
if #KEYS == 0 and ARGV[1] == '@keys' then
  local count = tonumber(ARGV[2])
  local keys, args = {}, {}
  for i = 1, count do keys[i] = ARGV[2 + i] end
  for i = count + 3, #ARGV do args[#args + 1] = ARGV[i] end
  KEYS, ARGV = keys, args
end
-- A mark is removed only when a delivered flush (or, for references, the
-- job's write) carried the item at its version or newer: versions only
-- grow per item (ZADD GT, and deletes and clears move past the views they
-- remove), so several instances settle each other's marks safely.
local function mark_clock()
  local now = redis.call('TIME')
  return tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
end
local function mark_value(version, at)
  return string.format('%d,%d', version, at)
end
local function mark_version(value)
  return tonumber(string.match(value, '^(%d+),'))
end
local function mark_at(value)
  return tonumber(string.match(value, '^%d+,(%d+)'))
end
-- A kept mark: its record is (also) in k.
local KEPT = ',k'
local function mark_kept(value)
  return string.sub(value, -2) == KEPT
end
-- The field that keeps p in being between marks.
local KEEPER = '~keep'
-- The member that keeps a re-drive index in being while no user is in it
-- (`model::keys::INDEX_KEEPER`; score +inf: never due), so the first user
-- added and the last taken out make and delete no key.
local INDEX_KEEPER = '~'
-- Adds the user `uid` to the re-drive index `index`, due at `at`, unless
-- listed.
local function index_user(index, at, uid)
  redis.call('ZADD', index, 'NX', at, uid, '+inf', INDEX_KEEPER)
end
-- The field of the shipped reference of `item`.
local SHIPPED = ':'
local function shipped_field(item)
  return SHIPPED .. item
end
-- The item a field of p names as a shipped reference; nil for a mark.
local function shipped_item(field)
  if string.sub(field, 1, 1) == SHIPPED then return string.sub(field, 2) end
  return nil
end
