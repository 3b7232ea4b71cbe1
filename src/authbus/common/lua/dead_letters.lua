-- Requeue or purge dead letters of one subscriber, all of them or those of one event id.
-- KEYS[1] dead   KEYS[2] published
-- ARGV[1] 'requeue' | 'purge'   ARGV[2] event id ('' = every dead letter)   ARGV[3] notify channel
-- Requeued items restart at attempt 1 and go to the consuming end of published, to be retried
-- next (as the reaper requeues), oldest first. Returns how many items were moved or removed.
local op, event_id = ARGV[1], ARGV[2]
local items = redis.call('LRANGE', KEYS[1], 0, -1)
local count = 0
-- Newest first (the list is LPUSHed): each RPUSH goes in front of the one before, so the
-- oldest requeued event ends at the consuming end and they keep their relative order.
for i = 1, #items do
  local item = items[i]
  local body = string.match(item, '^%d+:(.*)$') or item
  local match = event_id == ''
  if not match then
    local ok, decoded = pcall(cjson.decode, body)
    match = ok and type(decoded) == 'table' and decoded['id'] == event_id
  end
  if match then
    redis.call('LREM', KEYS[1], -1, item)
    if op == 'requeue' then
      redis.call('RPUSH', KEYS[2], '1:' .. body)
    end
    count = count + 1
  end
end
if op == 'requeue' and count > 0 then
  redis.call('PUBLISH', ARGV[3], '1')
end
return count
