-- Remove a subscriber from a channel with everything it had waiting, in flight or dead.
-- KEYS[1] subscribers   KEYS[2] published   KEYS[3] processing   KEYS[4] leases
-- KEYS[5] dead   KEYS[6] instances   KEYS[7] lagging   ARGV[1] subscriber name
-- Returns 1 when the subscriber was registered.
local was = redis.call('SREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
redis.call('HDEL', KEYS[7], ARGV[1])
return was
