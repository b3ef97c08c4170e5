-- histflow read-path note: records that HBase holds nothing the user's
-- timeline lacks, as of the check token a read saw (`trimmed_at` and
-- `hbase_written` joined by ':'), unless either moved since. Only on an
-- existing meta hash: a read never creates a key (a page of a user Redis
-- does not know reads HBase each time instead).
-- KEYS[1] = h:{uid}:m (meta). ARGV[1] = the token seen.
-- Returns 1 when noted, 0 when the token moved or the user has no meta.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local meta = redis.call('HMGET', KEYS[1], 'trimmed_at', 'hbase_written')
if (meta[1] or '0') .. ':' .. (meta[2] or '0') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'hbase_checked', ARGV[1])
return 1
