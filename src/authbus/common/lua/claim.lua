-- Claim up to ARGV[2] deliveries: move each from published to processing and lease it.
-- KEYS[1] published   KEYS[2] processing   KEYS[3] leases
-- ARGV[1] lease in ms   ARGV[2] how many to claim
-- Returns the claimed items (possibly none). Lease deadlines use the Redis clock so
-- instances with skewed clocks agree.
local t = redis.call('TIME')
local deadline = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
local claimed = {}
for _ = 1, tonumber(ARGV[2]) do
  local item = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
  if not item then break end
  redis.call('ZADD', KEYS[3], deadline, item)
  claimed[#claimed + 1] = item
end
return claimed
