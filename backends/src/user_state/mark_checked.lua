-- histflow read-path note: records that HBase holds nothing the user's
-- timeline lacks, at ARGV[1] (unix ms, the reader's clock), in a user never
-- trimmed (`meta.rs`, NOTE_LIFETIME_MS: a trim leaves items only in HBase,
-- so a trim since the read looked, or before it, makes no note). Only on
-- an existing meta hash: a read never creates a key (a page of a user
-- Redis does not know reads HBase each time instead).
-- KEYS[1] = h:{uid}:m (meta).
-- Returns 1 when noted, 0 when the user was trimmed or has no meta.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HEXISTS', KEYS[1], 'trimmed_at') == 1 then return 0 end
redis.call('HSET', KEYS[1], 'hbase_checked', ARGV[1])
return 1
