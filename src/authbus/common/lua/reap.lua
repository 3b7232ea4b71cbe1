-- Requeue deliveries whose lease ran out, once the backoff of their attempt has passed too.
-- KEYS[1] processing   KEYS[2] leases   KEYS[3] published   KEYS[4] dead
-- ARGV[1] max deliveries   ARGV[2] at most this many leases per call   ARGV[3] notify channel
-- ARGV[4] backoff of attempt 1 in ms (0: none)   ARGV[5] largest backoff in ms
-- A delivery is due at its lease deadline + min(ARGV[5], ARGV[4] * 2^(attempt - 1)). A failed
-- handler releases its lease at once (deadline = now), so it waits the backoff; a crashed or
-- hung instance's lease runs out by itself, so it waits the lease and then the backoff, and a
-- poison event that kills its process is not retried in a tight loop. Until then the delivery
-- stays in processing, and the instance holding it may still renew or acknowledge it.
-- A requeued item carries attempt + 1 (a different string, so a late ack removes nothing) and
-- goes to the consuming end of published, to be retried next. Past max deliveries, or when the
-- item has no readable attempt, it moves to dead unchanged, as soon as its lease ends.
-- Returns {requeued, event id of each item moved to dead ('' when unreadable)...}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local max_deliveries = tonumber(ARGV[1])
local base, cap = tonumber(ARGV[4]) or 0, tonumber(ARGV[5]) or 0
-- Oldest deadlines first; items still in their backoff are skipped and looked at again later
-- (every one of them is due within `cap` of its deadline, so none waits longer than that).
local expired = redis.call(
  'ZRANGEBYSCORE', KEYS[2], '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2])
)
local requeued, dead_ids = 0, {}
for i = 1, #expired, 2 do
  local item, deadline = expired[i], tonumber(expired[i + 1])
  local attempt, body = string.match(item, '^(%d+):(.*)$')
  attempt = tonumber(attempt)
  local retry = attempt ~= nil and attempt < max_deliveries
  local due = deadline
  if retry and base > 0 then
    due = deadline + math.min(cap, base * 2 ^ math.min(attempt - 1, 40))
  end
  if due <= now then
    redis.call('ZREM', KEYS[2], item)
    local copies = redis.call('LREM', KEYS[1], 0, item)
    for _ = 1, copies do
      if retry then
        redis.call('RPUSH', KEYS[3], (attempt + 1) .. ':' .. body)
        requeued = requeued + 1
      else
        redis.call('LPUSH', KEYS[4], item)
        local id = ''
        local ok, decoded = pcall(cjson.decode, body or '')
        if ok and type(decoded) == 'table' and type(decoded['id']) == 'string' then
          id = decoded['id']
        end
        dead_ids[#dead_ids + 1] = id
      end
    end
  end
end
if requeued > 0 then
  redis.call('PUBLISH', ARGV[3], '1')
end
local result = {requeued}
for _, id in ipairs(dead_ids) do
  result[#result + 1] = id
end
return result
