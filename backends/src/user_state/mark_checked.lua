-- histflow read-path note: records that HBase holds nothing the user's
-- timeline lacks, as of the check token a read saw (`trimmed_at` and
-- `hbase_written` joined by ':'), unless either moved since.
-- KEYS[1] = h:{uid}:m (meta). ARGV[1] = the token seen, ARGV[2] = TTL
-- seconds for a meta hash made here.
-- Returns 1 when noted, 0 when the token moved.
local meta = redis.call('HMGET', KEYS[1], 'trimmed_at', 'hbase_written')
if (meta[1] or '0') .. ':' .. (meta[2] or '0') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'hbase_checked', ARGV[1])
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 1
