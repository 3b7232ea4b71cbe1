-- Feed a lagging subscriber from the log: push one batch, advance its lagging mark, or
-- (no items, ARGV[3] == '') clear the mark once it has caught up.
-- KEYS[1] published   KEYS[2] lagging
-- ARGV[1] subscriber   ARGV[2] the mark the caller read from   ARGV[3] next mark or ''
-- ARGV[4] notify channel   ARGV[5..] delivery items, oldest first
-- Returns -1 when the mark moved meanwhile (a late event lowered it: reread from the new
-- mark), else the number of items pushed.
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then
  return -1
end
local i = 5
while i <= #ARGV do
  local last = math.min(i + 499, #ARGV)
  redis.call('LPUSH', KEYS[1], unpack(ARGV, i, last))
  i = last + 1
end
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[2], ARGV[1])
else
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
end
if #ARGV >= 5 then
  redis.call('PUBLISH', ARGV[4], '1')
end
return #ARGV - 4
