-- Acknowledge one delivery: remove exactly that item from processing and drop its lease.
-- KEYS[1] processing   KEYS[2] leases   ARGV[1] the delivery item
-- Returns 1 when the item was still ours, 0 when it was requeued meanwhile (late ack).
local removed = redis.call('LREM', KEYS[1], -1, ARGV[1])
-- An identical copy (a duplicate fan-out) may still be in flight; it keeps the lease.
if removed > 0 and not redis.call('LPOS', KEYS[1], ARGV[1]) then
  redis.call('ZREM', KEYS[2], ARGV[1])
end
return removed
