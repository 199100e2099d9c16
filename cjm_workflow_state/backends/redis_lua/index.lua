-- index.lua: the calls that go through a flow's indexes or visit many sessions: list, count, list_flows, purge, rekey,
-- load.
--
-- ARGV: 1 the operation, 2 the store's escaped prefix P, 3 its ttl in seconds ('' for none), 4.. the operation's
--       own arguments; KEYS: see each operation below.
-- Key names (P and ids escaped with `esc`, the twin of escape_id): a session's hash P:{S}:f:F, the flows of a
-- session id P:{S}:flows, a flow's indexes P:x:{F}:u (score = updated time), :c (created time), :l (member = label
-- sort key .. id), :m (id -> label sort key), :i (ids, for paging by id), the flow registry P:flows.
-- Redis removes an expired session's hash by itself, not its index entries: `prune` removes the entries whose
-- updated time is more than ttl (plus a second, for millisecond rounding) ago and whose hash is gone, and every
-- session a page returns is checked (an entry whose hash vanished anyway is removed, and the page read again).

local OP, P, TTL = ARGV[1], ARGV[2], ARGV[3]

local function esc(s)  -- the Lua twin of escape_id: percent-encode all but A-Z a-z 0-9 _ . - ~
  return (string.gsub(s, '[^0-9A-Za-z_.~%-]', function(c) return string.format('%%%02X', string.byte(c)) end))
end
local function hkey(se, fe) return P .. ':{' .. se .. '}:f:' .. fe end  -- a session's hash, from escaped ids
local function fkeys(fe)  -- a flow's u, c, l, m, i index keys
  local b = P .. ':x:{' .. fe .. '}:'
  return b .. 'u', b .. 'c', b .. 'l', b .. 'm', b .. 'i'
end

local function unindex(zu, zc, zl, lm, zi, sid)  -- remove a session's entries from its flow's indexes
  local lp = redis.call('HGET', lm, sid)
  if lp then redis.call('HDEL', lm, sid) else lp = '\0' end
  redis.call('ZREM', zu, sid); redis.call('ZREM', zc, sid)
  redis.call('ZREM', zl, lp .. sid); redis.call('ZREM', zi, sid)
end

local function now_s()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

local function prune(fe, zu, zc, zl, lm, zi)  -- remove the entries of sessions that expired
  if TTL == '' then return end
  local before = now_s() - tonumber(TTL) + 1
  for _, sid in ipairs(redis.call('ZRANGEBYSCORE', zu, '-inf', string.format('(%.17g', before))) do
    if redis.call('EXISTS', hkey(esc(sid), fe)) == 0 then unindex(zu, zc, zl, lm, zi, sid) end
  end
end

local function row(sid, fe, out)  -- append a live session's id and summary fields to `out`; false when it is gone
  local r = redis.call('HMGET', hkey(esc(sid), fe), 's', 'l', 'c', 'u', 'n', 'z')
  if not r[3] then return false end
  out[#out + 1] = sid
  for j = 1, 6 do out[#out + 1] = r[j] end
  return true
end

local function list()
  -- KEYS: the flow's u, c, l, m, i. ARGV: 4 the escaped flow id, 5 the index ('u', 'c', 'l' or 'i'), 6 '1' for
  -- descending, 7 offset, 8 count (-1: all), 9 list only the ids after this one ('' from the first; 'i' ascending
  -- from offset 0 only). Returns the sessions flat: id, step, label key, created, updated, n, z for each.
  local zu, zc, zl, lm, zi = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
  local fe, which, desc, offset, count = ARGV[4], ARGV[5], ARGV[6] == '1', tonumber(ARGV[7]), tonumber(ARGV[8])
  prune(fe, zu, zc, zl, lm, zi)
  local out = {}
  if which == 'i' and not desc and offset == 0 then
    -- a keyset page: ids in byte order of UTF-8 (code point order); dead entries are skipped, the page still filled
    local from, n = '-', 0
    if ARGV[9] ~= '' then from = '(' .. ARGV[9] end
    while count < 0 or n < count do
      local want = 1000
      if count >= 0 then want = count - n end
      local ids = redis.call('ZRANGEBYLEX', zi, from, '+', 'LIMIT', 0, want)
      for _, sid in ipairs(ids) do
        if row(sid, fe, out) then n = n + 1 else unindex(zu, zc, zl, lm, zi, sid) end
      end
      if #ids < want then break end
      from = '(' .. ids[#ids]
    end
    return out
  end
  local idx = ({u = zu, c = zc, l = zl, i = zi})[which]
  local stop = -1
  if count >= 0 then stop = offset + count - 1 end
  for attempt = 1, 10 do  -- a page by rank: read again when a session on it had vanished
    local members
    if desc then members = redis.call('ZREVRANGE', idx, offset, stop)
    else members = redis.call('ZRANGE', idx, offset, stop) end
    out = {}
    local dead = false
    for _, m in ipairs(members) do
      local sid = m
      if which == 'l' then  -- '\0' .. id (no label), or '\1' .. escaped label .. '\0' .. id
        if string.byte(m, 1) == 0 then sid = string.sub(m, 2)
        else sid = string.sub(m, string.find(m, '\0', 2, true) + 1) end
      end
      if not row(sid, fe, out) then unindex(zu, zc, zl, lm, zi, sid); dead = true end
    end
    if not dead then break end
  end
  return out
end

local function count()
  -- KEYS: the flow's u, c, l, m, i. ARGV: 4 the escaped flow id. How many of the flow's sessions are live (each
  -- entry is checked: those whose hash is gone are removed).
  local zu, zc, zl, lm, zi = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
  local n = 0
  for _, sid in ipairs(redis.call('ZRANGE', zi, 0, -1)) do
    if redis.call('EXISTS', hkey(esc(sid), ARGV[4])) == 1 then n = n + 1 else unindex(zu, zc, zl, lm, zi, sid) end
  end
  return n
end

local function load()
  -- KEYS: 1 the flows of a session id (P:{S}:flows); ARGV: 4 the session id. What a request scope starts from: for
  -- each flow in which the id has a session, the flow id and the session's hash (as HGETALL gives it); a flow whose
  -- session expired is skipped.
  local se, out = esc(ARGV[4]), {}
  for _, f in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    local fields = redis.call('HGETALL', hkey(se, esc(f)))
    if #fields > 0 then out[#out + 1] = f; out[#out + 1] = fields end
  end
  return out
end

local function list_flows()
  -- KEYS: the flow registry. The flows holding live sessions (the others leave the registry).
  local out = {}
  for _, f in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    local fe = esc(f)
    local zu, zc, zl, lm, zi = fkeys(fe)
    prune(fe, zu, zc, zl, lm, zi)
    if redis.call('ZCARD', zu) > 0 then out[#out + 1] = f
    else redis.call('SREM', KEYS[1], f); redis.call('DEL', zc, zl, lm, zi) end
  end
  return out
end

local function purge()
  -- KEYS: the flow registry. ARGV: 4 a flow id, 5 offset, 6 batch size. One batch of the flow's entries last
  -- written more than ttl ago by the server's clock: a session written without an expiry (by a store without a ttl
  -- on this prefix) and not written since is deleted; the entries of sessions that expired by themselves are
  -- removed; sessions with an expiry of their own are left to Redis.
  -- Returns {sessions deleted, offset of the next batch or -1 when the flow is done}.
  local f, offset, batch = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
  local fe = esc(f)
  local zu, zc, zl, lm, zi = fkeys(fe)
  local cutoff = now_s() - tonumber(TTL)
  local ids = redis.call('ZRANGEBYSCORE', zu, '-inf', string.format('(%.17g', cutoff), 'LIMIT', offset, batch)
  local deleted, kept = 0, 0
  for _, sid in ipairs(ids) do
    local se = esc(sid)
    local h = hkey(se, fe)
    local left = redis.call('PTTL', h)
    if left == -2 then
      unindex(zu, zc, zl, lm, zi, sid)
    elseif left == -1 and tonumber(redis.call('HGET', h, 'u') or '0') < cutoff then
      redis.call('DEL', h); unindex(zu, zc, zl, lm, zi, sid)
      redis.call('SREM', P .. ':{' .. se .. '}:flows', f)
      deleted = deleted + 1
    else
      kept = kept + 1
    end
  end
  if #ids < batch then
    if redis.call('ZCARD', zu) == 0 then redis.call('SREM', KEYS[1], f); redis.call('DEL', zc, zl, lm, zi) end
    return {deleted, -1}
  end
  return {deleted, offset + kept}
end

-- keep `keys` alive for a session that lives `life` ms (-1: for ever), given their times to live `before` it was
-- added (see session.lua's `outlive`: a key without an expiry never gets one, others only a longer one)
local function ttls(keys)
  local p = {}
  for i, k in ipairs(keys) do p[i] = redis.call('PTTL', k) end
  return p
end
local function outlive(keys, before, life)
  for i, k in ipairs(keys) do
    if life < 0 then redis.call('PERSIST', k)
    else
      local p = before[i]
      if p == -2 or (p >= 0 and p < life * 1.5) then redis.call('PEXPIRE', k, math.max(2 * life, 1)) end
    end
  end
end

local function rekey()
  -- KEYS: the flow sets of the old and the new id. ARGV: 4 old id, 5 new id, 6 the call's token, 7 how long its
  -- record is kept (ms). Moves every flow's session of the old id to the new one; -1 (and nothing moved) when the
  -- new id holds a session. Runs once per token, like session.lua's `once`: the record lies beside the old id's
  -- flow set and is the first write.
  local OLD, NEW = ARGV[4], ARGV[5]
  local oe, ne = esc(OLD), esc(NEW)
  local record = KEYS[1] .. ':once:' .. ARGV[6]
  local done = redis.call('GET', record)
  if done then return tonumber(done) end
  for _, f in ipairs(redis.call('SMEMBERS', KEYS[2])) do
    if redis.call('EXISTS', hkey(ne, esc(f))) == 1 then
      redis.call('SET', record, -1, 'PX', ARGV[7])
      return -1
    end
  end
  local moving = 0
  for _, f in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    if redis.call('EXISTS', hkey(oe, esc(f))) == 1 then moving = moving + 1 end
  end
  redis.call('SET', record, moving, 'PX', ARGV[7])
  -- a moved session keeps its expiry (RENAME keeps it) and its flow indexes; a flow's index key that only the old
  -- id's entry kept alive is gone once that entry is removed, and made again by the new id's: it must outlive the
  -- session again, as must the new id's flow set, made here afresh
  redis.call('DEL', KEYS[2])
  local longest = 0  -- the longest time to live of a moved session in ms (-1: one has no expiry)
  for _, f in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    local fe = esc(f)
    local zu, zc, zl, lm, zi = fkeys(fe)
    local ho = hkey(oe, fe)
    unindex(zu, zc, zl, lm, zi, OLD)
    if redis.call('EXISTS', ho) == 1 then
      local m = redis.call('HMGET', ho, 'u', 'c', 'l')
      unindex(zu, zc, zl, lm, zi, NEW)
      local keys = {zu, zc, zl, lm, zi}
      local before = ttls(keys)
      local hn = hkey(ne, fe)
      redis.call('RENAME', ho, hn)
      redis.call('ZADD', zu, m[1], NEW); redis.call('ZADD', zc, m[2], NEW); redis.call('ZADD', zi, 0, NEW)
      if m[3] then redis.call('ZADD', zl, 0, m[3] .. NEW); redis.call('HSET', lm, NEW, m[3])
      else redis.call('ZADD', zl, 0, '\0' .. NEW) end
      redis.call('SADD', KEYS[2], f)
      local life = redis.call('PTTL', hn)
      outlive(keys, before, life)
      if life < 0 or longest < 0 then longest = -1 else longest = math.max(longest, life) end
    end
  end
  redis.call('DEL', KEYS[1])
  if redis.call('EXISTS', KEYS[2]) == 1 then outlive({KEYS[2]}, {-2}, longest) end
  return moving
end

if OP == 'list' then return list()
elseif OP == 'count' then return count()
elseif OP == 'list_flows' then return list_flows()
elseif OP == 'purge' then return purge()
elseif OP == 'rekey' then return rekey()
elseif OP == 'load' then return load() end
return redis.error_reply('index.lua: unknown operation ' .. tostring(OP))
