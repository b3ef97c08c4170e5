-- histflow sweep lock: takes the lock if free, renews it if the owner holds
-- it. KEYS[1] = the lock; ARGV[1] = owner, ARGV[2] = lease ms. Returns 1 if
-- held.
local holder = redis.call('GET', KEYS[1])
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
elseif holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
