-- Fan a batch of delivery items out to every subscriber of one channel, then notify.
-- Atomic: a subscriber added concurrently gets the whole batch or none of it.
-- KEYS[1] subscribers set   KEYS[2] lagging hash
-- ARGV[1] notify channel    ARGV[2] published-list key prefix (subscriber name appended)
-- ARGV[3] max waiting per subscriber (0 = unbounded)   ARGV[4] log position of the first item
-- ARGV[5..] delivery items, oldest first
-- Returns {subscribers the batch was pushed to, subscribers skipped as lagging}.
local max_waiting = tonumber(ARGV[3])
local first_position = tonumber(ARGV[4])
local subscribers = redis.call('SMEMBERS', KEYS[1])
local delivered, skipped = 0, 0
for _, name in ipairs(subscribers) do
  local list = ARGV[2] .. name
  local lag = tonumber(redis.call('HGET', KEYS[2], name))
  if lag then
    -- Lagging: it is fed from the log (catch_up.lua) in order; only lower the mark when an
    -- event committed late has a position below it, so the catch-up rereads from there.
    if first_position < lag then
      redis.call('HSET', KEYS[2], name, first_position)
    end
    skipped = skipped + 1
  elseif max_waiting > 0 and redis.call('LLEN', list) >= max_waiting then
    -- Bounded growth: a subscriber that stopped consuming is marked lagging from the first
    -- position it missed, instead of filling Redis unnoticed.
    redis.call('HSET', KEYS[2], name, first_position)
    skipped = skipped + 1
  else
    -- LPUSH in chunks: Lua's unpack() has a small stack.
    local i = 5
    while i <= #ARGV do
      local last = math.min(i + 499, #ARGV)
      redis.call('LPUSH', list, unpack(ARGV, i, last))
      i = last + 1
    end
    delivered = delivered + 1
  end
end
if delivered > 0 then
  redis.call('PUBLISH', ARGV[1], '1')
end
return {delivered, skipped}
