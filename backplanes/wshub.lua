#!lua name=wshub
--
-- backplanes/wshub.lua - the Redis function library `wshub` (Redis 7 or
-- newer), CONTRACT.md "History and recovery".  A publish with history
-- is one atomic step:
--
--   FCALL wshub_publish 3 <history key> <meta key> <channel key>
--         <data> <history-size> <history-ttl s> <meta-ttl s>
--
-- returns {offset, epoch}.  The meta hash holds the channel's epoch and
-- newest offset; when it is missing (expired, or Redis lost its data) a
-- new epoch starts at offset 1 and the old stream is deleted, since its
-- offsets belong to the old epoch.  The stream gets one entry per
-- message, id <offset>-0, field d, trimmed to exactly <history-size>
-- entries.  Both keys expire after their TTLs; the pub/sub payload is
-- wshub:<offset>:<epoch>:<data>.
--
-- A history read is one atomic step too:
--
--   FCALL wshub_read 2 <history key> <meta key> <since> <count> <meta-ttl s>
--
-- returns {offset, epoch, entries}: the meta hash's newest offset and
-- epoch and up to <count> kept entries with offsets above <since>,
-- oldest first, each {id, {'d', data}} as XRANGE gives them.  A missing
-- meta hash is created (a fresh epoch, offset 0, expiring after
-- <meta-ttl s>) and the stale stream deleted, so a channel subscribed to
-- before its first publish already has the epoch its first publish
-- keeps.  An existing record's TTLs are not refreshed: only a publish
-- does that.
--
-- Every instance of the hub loads this library with FUNCTION LOAD
-- REPLACE on every (re)connect to Redis (bp_redis.c, which has this file
-- compiled in); outside publishers call the functions the same way.

local B62 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'

local function b62(n, width)
  local s = ''
  for _ = 1, width do
    local d = n % 62
    s = string.sub(B62, d + 1, d + 1) .. s
    n = math.floor(n / 62)
  end
  return s
end

-- 16 characters of A-Z a-z 0-9: the server's clock (seconds and
-- microseconds) and a hash of the meta key, so two channels starting
-- together differ and one channel never gets its previous epoch back.
local function new_epoch(mkey)
  local t = redis.call('TIME')
  local h = 5381
  for i = 1, #mkey do
    h = (h * 33 + string.byte(mkey, i)) % 2147483647
  end
  return b62(tonumber(t[1]), 6) .. b62(tonumber(t[2]), 4) .. b62(h, 6)
end

-- A non-negative integer argument, or nil.
local function natural(v)
  local n = tonumber(v)
  if n == nil or n < 0 or n ~= math.floor(n) or n > 9007199254740991 then
    return nil
  end
  return n
end

local function positive(v)
  local n = tonumber(v)
  if n == nil or n < 1 or n ~= math.floor(n) then
    return nil
  end
  return n
end

redis.register_function('wshub_publish', function(keys, args)
  if #keys ~= 3 or #args ~= 4 then
    return redis.error_reply('ERR wshub_publish: 3 keys and 4 arguments')
  end
  local hkey, mkey, ckey = keys[1], keys[2], keys[3]
  local data = args[1]
  local size, ttl, meta_ttl = positive(args[2]), positive(args[3]),
    positive(args[4])
  if size == nil or ttl == nil or meta_ttl == nil then
    return redis.error_reply(
      'ERR wshub_publish: history-size, history-ttl and meta-ttl must be ' ..
      'positive integers')
  end
  local epoch = redis.call('HGET', mkey, 'epoch')
  if not epoch then
    epoch = new_epoch(mkey)
    redis.call('DEL', hkey)
    redis.call('HSET', mkey, 'epoch', epoch)
  end
  local offset = redis.call('HINCRBY', mkey, 'offset', 1)
  redis.call('XADD', hkey, 'MAXLEN', size, offset .. '-0', 'd', data)
  redis.call('EXPIRE', hkey, ttl)
  redis.call('EXPIRE', mkey, meta_ttl)
  redis.call('PUBLISH', ckey,
    'wshub:' .. offset .. ':' .. epoch .. ':' .. data)
  return {offset, epoch}
end)

redis.register_function('wshub_read', function(keys, args)
  if #keys ~= 2 or #args ~= 3 then
    return redis.error_reply('ERR wshub_read: 2 keys and 3 arguments')
  end
  local hkey, mkey = keys[1], keys[2]
  local since, count, meta_ttl = natural(args[1]), natural(args[2]),
    positive(args[3])
  if since == nil or count == nil or meta_ttl == nil then
    return redis.error_reply(
      'ERR wshub_read: since and count must be non-negative integers, ' ..
      'meta-ttl a positive integer')
  end
  local meta = redis.call('HMGET', mkey, 'epoch', 'offset')
  local epoch, offset = meta[1], tonumber(meta[2]) or 0
  if not epoch then
    epoch = new_epoch(mkey)
    offset = 0
    redis.call('DEL', hkey)
    redis.call('HSET', mkey, 'epoch', epoch, 'offset', 0)
    redis.call('EXPIRE', mkey, meta_ttl)
  end
  local entries = {}
  if count > 0 and since < offset then
    entries = redis.call('XRANGE', hkey, string.format('%d-0', since + 1),
      '+', 'COUNT', count)
  end
  return {offset, epoch, entries}
end)
