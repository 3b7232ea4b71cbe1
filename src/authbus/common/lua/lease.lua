-- Set the lease deadline of deliveries still held to Redis time + ARGV[1] ms.
-- Used to renew a long handler's lease and to schedule a retry after a backoff (the reaper
-- requeues the delivery once the new deadline passes).
-- KEYS[1] leases   ARGV[1] ms from now   ARGV[2..] delivery items
-- Returns one flag per item: 1 still held (deadline moved), 0 lost (already reaped or acked).
local t = redis.call('TIME')
local deadline = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
local held = {}
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], 'XX', deadline, ARGV[i])
    held[#held + 1] = 1
  else
    held[#held + 1] = 0
  end
end
return held
