-- Push log events into one subscriber's published list (subscribe from the beginning or
-- from a position, e.g. to catch up a lagging subscriber) and notify its instances.
-- KEYS[1] published   ARGV[1] notify channel   ARGV[2..] delivery items, oldest first
-- Returns the list length.
local i = 2
while i <= #ARGV do
  local last = math.min(i + 499, #ARGV)
  redis.call('LPUSH', KEYS[1], unpack(ARGV, i, last))
  i = last + 1
end
if #ARGV >= 2 then
  redis.call('PUBLISH', ARGV[1], '1')
end
return redis.call('LLEN', KEYS[1])
