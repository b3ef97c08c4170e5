-- histflow sweep progress: saves the place only while the owner holds the
-- lock (an instance that lost it, frozen past its lease, cannot move the
-- place back). KEYS[1] = the lock, KEYS[2] = the progress hash; ARGV[1] =
-- owner, ARGV[2] = cursor ('': from the first row), ARGV[3] = pass started,
-- ARGV[4] = pass done. Returns 1 if saved.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('HDEL', KEYS[2], 'cursor') else redis.call('HSET', KEYS[2], 'cursor', ARGV[2]) end
redis.call('HSET', KEYS[2], 'pass_started', ARGV[3], 'pass_done', ARGV[4])
return 1
