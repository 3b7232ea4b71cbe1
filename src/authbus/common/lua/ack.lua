-- Acknowledge deliveries: remove exactly each item from processing and drop its lease.
-- KEYS[1] processing   KEYS[2] leases   ARGV the delivery items (one or many)
-- Returns, per item, 1 when it was still ours, 0 when it was requeued meanwhile (late ack).
local result = {}
for i, item in ipairs(ARGV) do
  local removed = redis.call('LREM', KEYS[1], -1, item)
  -- An identical copy (a duplicate fan-out) may still be in flight; it keeps the lease.
  if removed > 0 and not redis.call('LPOS', KEYS[1], item) then
    redis.call('ZREM', KEYS[2], item)
  end
  result[i] = removed
end
return result
