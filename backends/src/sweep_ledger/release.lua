-- histflow sweep lock: releases it if the owner holds it. KEYS[1] = the
-- lock; ARGV[1] = owner. Returns 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
