-- Requeue deliveries whose lease ran out (crashed/hung instance, or a failure's backoff ended).
-- KEYS[1] processing   KEYS[2] leases   KEYS[3] published   KEYS[4] dead
-- ARGV[1] max deliveries   ARGV[2] at most this many leases per call   ARGV[3] notify channel
-- A requeued item carries attempt + 1 (a different string, so a late ack removes nothing) and
-- goes to the consuming end of published, to be retried next. Past max deliveries, or when the
-- item has no readable attempt, it moves to dead unchanged. Returns {requeued, dead}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local max_deliveries = tonumber(ARGV[1])
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local requeued, dead = 0, 0
for _, item in ipairs(expired) do
  redis.call('ZREM', KEYS[2], item)
  local copies = redis.call('LREM', KEYS[1], 0, item)
  local attempt, body = string.match(item, '^(%d+):(.*)$')
  attempt = tonumber(attempt)
  for _ = 1, copies do
    if attempt and attempt < max_deliveries then
      redis.call('RPUSH', KEYS[3], (attempt + 1) .. ':' .. body)
      requeued = requeued + 1
    else
      redis.call('LPUSH', KEYS[4], item)
      dead = dead + 1
    end
  end
end
if requeued > 0 then
  redis.call('PUBLISH', ARGV[3], '1')
end
return {requeued, dead}
