-- histflow job note: after the job wrote a user's records to HBase, counts
-- it in the user's meta (if the user has one), which voids any "HBase holds
-- nothing more" note (`hbase_checked`) of the read path.
-- KEYS[1] = h:{uid}:m (meta). Returns 0.
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HINCRBY', KEYS[1], 'hbase_written', 1) end
return 0
