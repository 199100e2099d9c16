-- session.lua: every write to one session, each one atomic (no other command runs while a script runs).
--
-- KEYS: 1 the session's hash H, named P:{S}:f:F (P the store's escaped prefix, S and F the escaped session and flow
--       ids). The other keys the session shares are named from it: X = P:{S}:flows (the flows in which this id has
--       a session), FLOWS = P:flows (the flow registry), and the flow's indexes ZU = P:x:{F}:u (score = updated
--       time), ZC = P:x:{F}:c (created time), ZL = P:x:{F}:l (member = label sort key .. session id), LM = P:x:{F}:m
--       (session id -> label sort key), ZI = P:x:{F}:i (the session ids, for paging by id).
-- ARGV: 1 the ttl in milliseconds ('' for none), 2 the operation ('merge', 'fields', 'delete', 'restore', or
--       'batch': several of the others, on one or more sessions of one id), 3.. the operation's own arguments (see
--       each below). The flow and session ids are read from H's name.
--
-- H holds a field per top-level state key, named by the key as JSON text (so it starts with '"') and holding the
-- value's canonical JSON, and s (step), l (label sort key), c (created), u (updated), n and z (how many state fields
-- and the sum of their member lengths: the state's size without reading it).
-- Times come from the server's clock (TIME), as "seconds.microseconds".

-- A script's top level runs on every call, and making a closure costs about as much as a small Redis command: the
-- helpers below are the ones most calls use; what only some operations need is defined inside them.
local function byte_of(hex) return string.char(tonumber(hex, 16)) end  -- for percent-decoding: '%41' -> 'A'

local TTL, OP = ARGV[1], ARGV[2]
local LIFE = -1  -- how long the session written lives, in ms (-1: for ever)
if TTL ~= '' then LIFE = tonumber(TTL) end
-- The session a write works on, and the keys it shares with others (set by `bind`: a batch binds each in turn)
local H, P, FE, FLOW, SID, X, FLOWS, ZU, ZC, ZL, LM, ZI, SHARED

local function bind(h)
  H = h
  local hb = string.find(H, ':{', 1, true)  -- H is P:{S}:f:F, and neither P nor an escaped id holds ':', '{' or '}'
  local he = string.find(H, '}:f:', hb, true)
  P, FE = string.sub(H, 1, hb - 1), string.sub(H, he + 4)
  FLOW = string.gsub(FE, '%%(%x%x)', byte_of)  -- the raw ids (escape_id decoded), as index members
  SID = string.gsub(string.sub(H, hb + 2, he - 1), '%%(%x%x)', byte_of)
  local I = P .. ':x:{' .. FE .. '}:'
  X, FLOWS = string.sub(H, 1, he) .. ':flows', P .. ':flows'
  ZU, ZC, ZL, LM, ZI = I .. 'u', I .. 'c', I .. 'l', I .. 'm', I .. 'i'
  SHARED = {ZU, ZC, ZL, LM, X, FLOWS, ZI}  -- the keys this session shares with others
end

local function now()
  local t = redis.call('TIME')
  return t[1] .. '.' .. string.rep('0', 6 - #t[2]) .. t[2]
end

local function unindex(sid)  -- remove a session's entries from its flow's indexes
  local lp = redis.call('HGET', LM, sid)
  if lp then redis.call('HDEL', LM, sid) else lp = '\0' end
  redis.call('ZREM', ZU, sid); redis.call('ZREM', ZC, sid)
  redis.call('ZREM', ZL, lp .. sid); redis.call('ZREM', ZI, sid)
end

local function label(lp)  -- index this session under label sort key `lp` ('' or '\0' for no label)
  if lp == '' or lp == '\0' then redis.call('HDEL', H, 'l'); lp = '\0'
  else redis.call('HSET', H, 'l', lp); redis.call('HSET', LM, SID, lp) end
  redis.call('ZADD', ZL, 0, lp .. SID)
end

-- A shared key must outlive every session it lists, whichever store (with a ttl, another ttl, or none) wrote it.
-- `shared_before` notes the shared keys' times to live after the script removed what it removes (a key whose last
-- entry went no longer exists) and before it adds anything; after adding, `outlive` makes them outlive the session
-- written, which lives `life` ms (-1: for ever). For a session without an expiry they become persistent. Otherwise
-- only a key that did not exist (it lists nothing but what the script added) or that has an expiry gets one, and
-- only a longer one (2 life, when less than 1.5 life is left): a key without an expiry may list a session without
-- one, and never gets an expiry.
local function shared_before()
  local p = {}
  if LIFE >= 0 then for i, k in ipairs(SHARED) do p[i] = redis.call('PTTL', k) end end
  return p
end

local function outlive(before, life)
  for i, k in ipairs(SHARED) do
    if life < 0 then redis.call('PERSIST', k)
    else
      local p = before[i]
      if p == -2 or (p >= 0 and p < life * 1.5) then redis.call('PEXPIRE', k, math.max(2 * life, 1)) end
    end
  end
end

local function drop_stale(t)
  -- before indexing a new session: drop the entries an expired session with this id left, and up to two entries of
  -- the flow that expired more than a second ago (so a flow that is written but never listed does not grow)
  local stale = {}
  if redis.call('ZSCORE', ZC, SID) then stale[1] = SID end
  if TTL ~= '' then
    local cutoff = '(' .. (tonumber(t) - tonumber(TTL) / 1000 - 1)
    for _, old in ipairs(redis.call('ZRANGEBYSCORE', ZU, '-inf', cutoff, 'LIMIT', 0, 2)) do
      -- an old entry of a session written without a ttl (by another store on this prefix) is alive
      local se = string.gsub(old, '[^0-9A-Za-z_.~%-]', function(c) return string.format('%%%02X', string.byte(c)) end)
      if redis.call('EXISTS', P .. ':{' .. se .. '}:f:' .. FE) == 0 then stale[#stale + 1] = old end  -- (escape_id)
    end
  end
  for _, sid in ipairs(stale) do unindex(sid) end
end

local function index_new(t, lp)  -- index a new session (ZU is written by write_hash)
  redis.call('ZADD', ZC, t, SID); redis.call('ZADD', ZI, 0, SID); label(lp)
  redis.call('SADD', X, FLOW); redis.call('SADD', FLOWS, FLOW)
end

local function hset(list)  -- HSET field/value pairs, a thousand at a time (Lua's unpack has a limit)
  for i = 1, #list, 1000 do redis.call('HSET', H, unpack(list, i, math.min(i + 999, #list))) end
end

local function write_hash(list, t, before)
  -- index the write, write `list` to the hash, set the session's expiry (or make it persistent: the last writer's
  -- ttl decides), keep the shared keys alive for it
  redis.call('ZADD', ZU, t, SID)
  hset(list)
  if TTL ~= '' then redis.call('PEXPIRE', H, TTL) else redis.call('PERSIST', H) end
  outlive(before, LIFE)
end

local function once(token, ms, run)
  -- A call that may be sent twice (its connection dropped after the server ran it) runs once: its first run records
  -- its result under the call's token for `ms`, a second run returns that result and does nothing. The record lies
  -- beside the session's hash (under the store's prefix, in its hash slot). It is the script's first write, so a
  -- server out of memory refuses the call before it changes anything.
  local key = H .. ':once:' .. token
  local done = redis.call('GET', key)
  if done then return tonumber(done) end
  local result, act = run()
  redis.call('SET', key, result, 'PX', ms)
  if act then act() end
  return result
end

-- A batch checks every write's size before it writes anything (see `batch`): a merge given `dry`, what the writes
-- before it would leave of its session ({exists, n, z, len = field -> length, text = field -> value, wiped}),
-- reads its session through these and writes nothing.
local function field_len(dry, f)
  if dry then
    if dry.len[f] then return dry.len[f] end
    if dry.wiped then return 0 end
  end
  return redis.call('HSTRLEN', H, f)
end

local function field_text(dry, f)
  if dry and (dry.len[f] or dry.wiped) then return dry.text[f] end
  return redis.call('HGET', H, f) or nil
end

local function merge(A, dry)
  -- A: 3 the largest size allowed, 4 the field to merge into ('' for the top level), 5 how many keys to remove,
  --       6.. the keys to remove, then key/value pairs (keys as JSON text, values as canonical JSON).
  -- Returns the state's new size; 0 when nothing was written (no session, nothing to add); -size when too large.
  local exists, n, z
  if dry then exists, n, z = dry.exists, dry.n, dry.z
  else
    local m = redis.call('HMGET', H, 'n', 'z')
    exists = m[1] ~= false
    if exists then n, z = tonumber(m[1]), tonumber(m[2]) end
  end
  local first = 6 + tonumber(A[5])
  local fields, values = {}, {}
  if A[4] ~= '' then
    local cur = nil
    if exists then cur = field_text(dry, A[4]) end
    local merge_object
    do
      -- JSON text splicing (update_step_state merges into the object one field holds). Every stored value is
      -- the canonical JSON the store's encoder wrote, so equal keys have equal text: the members are found by
      -- jumping from one structural character to the next, replaced or appended as text, never decoded.
      local function str_end(s, i)  -- s:sub(i, i) is '"': the index of the closing quote
        local p = i + 1
        while true do
          local q = string.find(s, '["\\]', p)
          if string.byte(s, q) == 34 then return q end
          p = q + 2
        end
      end

      local function value_end(s, p)  -- the index of the last character of the value starting at p
        local depth = 0
        while true do
          local q = string.find(s, '[%[%]{}",]', p)
          local c = string.byte(s, q)
          if c == 34 then p = str_end(s, q) + 1
          elseif c == 91 or c == 123 then depth = depth + 1; p = q + 1
          elseif depth == 0 then return q - 1
          elseif c == 44 then p = q + 1
          else depth = depth - 1; p = q + 1 end
        end
      end

      function merge_object(cur, first)  -- cur's members (none if it is not an object), merged with A[first..]
        local keys, vals, pos = {}, {}, {}
        if cur and string.byte(cur, 1) == 123 and #cur > 2 then
          local i = 2
          while true do
            local ke = str_end(cur, i)
            local ve = value_end(cur, ke + 2)
            local k = string.sub(cur, i, ke)
            keys[#keys + 1] = k; vals[#vals + 1] = string.sub(cur, ke + 2, ve); pos[k] = #keys
            if string.byte(cur, ve + 1) == 125 then break end
            i = ve + 2
          end
        end
        for j = first, #A, 2 do
          local k = A[j]
          local p = pos[k]
          if p then vals[p] = A[j + 1] else keys[#keys + 1] = k; vals[#vals + 1] = A[j + 1]; pos[k] = #keys end
        end
        local t = {}
        for j = 1, #keys do t[j] = keys[j] .. ':' .. vals[j] end
        return '{' .. table.concat(t, ',') .. '}'
      end
    end
    fields[1] = A[4]; values[1] = merge_object(cur, first)
  else
    for i = first, #A, 2 do fields[#fields + 1] = A[i]; values[#values + 1] = A[i + 1] end
  end
  if not exists and #fields == 0 then return 0 end
  if not exists then n, z = 0, 0 end
  local written, gone = {}, {}
  for i = 1, #fields do
    local f = fields[i]
    local old = 0
    if exists then old = field_len(dry, f) end
    if old > 0 then z = z - #f - 1 - old else n = n + 1 end
    z = z + #f + 1 + #values[i]
    written[f] = true
  end
  if exists then
    for i = 6, first - 1 do
      local f = A[i]
      if not written[f] then
        local old = field_len(dry, f)
        if old > 0 then n = n - 1; z = z - #f - 1 - old; gone[#gone + 1] = f end
        written[f] = true
      end
    end
  end
  local size = 2 + z + math.max(n - 1, 0)  -- size formula: see cjm_workflow_state.core.codec.state_size
  if size > tonumber(A[3]) then return -size end
  if dry then  -- a batch's check: note what the write would leave, write nothing
    dry.exists, dry.n, dry.z = true, n, z
    for i = 1, #fields do dry.len[fields[i]] = #values[i]; dry.text[fields[i]] = values[i] end
    for _, f in ipairs(gone) do dry.len[f] = 0; dry.text[f] = nil end
    return size
  end
  local t = now()
  if not exists then drop_stale(t) end
  local before = shared_before()
  local list = {'u', t, 'n', n, 'z', z}
  if not exists then index_new(t, ''); list[7] = 'c'; list[8] = t end
  for i = 1, #gone, 1000 do redis.call('HDEL', H, unpack(gone, i, math.min(i + 999, #gone))) end
  for i = 1, #fields do list[#list + 1] = fields[i]; list[#list + 1] = values[i] end
  write_hash(list, t, before)
  return size
end

local function fields(A)
  -- A: 3 when ('any': create the session if absent; 'live': only if it exists; 'absent': only if it does not),
  --       4 the step ('' to leave it, '\0' for none), 5 the label sort key ('' or absent to leave it, '\0' for no
  --       label), 6 the call's token (absent when the call does not run once), 7 how long its record is kept (ms).
  -- Returns 1 when written, else 0.
  local when, step, lp = A[3], A[4], A[5] or ''
  local function run()
    local exists = redis.call('EXISTS', H) == 1
    if (when == 'live' and not exists) or (when == 'absent' and exists) then return 0 end
    return 1, function()
      local t = now()
      if not exists then drop_stale(t)
      elseif lp ~= '' then  -- remove the session's entry from the label index
        redis.call('ZREM', ZL, (redis.call('HGET', LM, SID) or '\0') .. SID); redis.call('HDEL', LM, SID)
      end
      local before = shared_before()
      local list = {'u', t}
      if not exists then
        index_new(t, lp)
        list = {'u', t, 'c', t, 'n', 0, 'z', 0}
      elseif lp ~= '' then label(lp) end
      if step == '\0' then redis.call('HDEL', H, 's')
      elseif step ~= '' then list[#list + 1] = 's'; list[#list + 1] = step end
      write_hash(list, t, before)
    end
  end
  if A[6] then return once(A[6], A[7], run) end
  local result, act = run()
  if act then act() end
  return result
end

local function remove_session()  -- the session's hash and its index entries
  redis.call('DEL', H)
  unindex(SID)
  redis.call('SREM', X, FLOW)
  if redis.call('ZCARD', ZU) == 0 then redis.call('SREM', FLOWS, FLOW); redis.call('DEL', ZC, ZL, LM, ZI) end
end

local function delete(A)
  -- A: 3 the call's token, 4 how long its record is kept (ms). Returns 1 when a session was deleted, else 0.
  return once(A[3], A[4], function() return redis.call('EXISTS', H), remove_session end)
end

local function restore(A)
  -- A: 3 label sort key ('' for none), 4 step ('' for none), 5 created, 6 updated, 7 n, 8 z, 9.. field/value
  --       pairs. A session restored already expired (updated + ttl is past) is not written. Returns 1 or 0.
  local left = nil  -- how long the session lives, ms: updated + ttl - now (nil: for ever)
  if TTL ~= '' then left = math.floor((tonumber(A[6]) - tonumber(now())) * 1000 + tonumber(TTL)) end
  redis.call('DEL', H)
  unindex(SID)
  if left and left <= 0 then return 0 end
  local before = shared_before()
  local list = {'c', A[5], 'u', A[6], 'n', A[7], 'z', A[8]}
  if A[4] ~= '' then list[#list + 1] = 's'; list[#list + 1] = A[4] end
  for i = 9, #A do list[#list + 1] = A[i] end
  hset(list)
  redis.call('ZADD', ZC, A[5], SID); redis.call('ZADD', ZU, A[6], SID); redis.call('ZADD', ZI, 0, SID)
  label(A[3])
  redis.call('SADD', X, FLOW); redis.call('SADD', FLOWS, FLOW)
  if left then redis.call('PEXPIRE', H, left) end
  outlive(before, left or -1)  -- a session restored with a later updated time lives longer than ttl
  return 1
end

local function batch(A)
  -- A request scope's writes, all or none (KEYS: the hashes they write, all of one session id, so of one hash slot).
  -- A: 3 the call's token, 4 how long its record is kept (ms), then each write: its hash (an index into KEYS), its
  --    operation ('merge', 'fields' or 'delete'), how many arguments follow, and those arguments, as a call of its
  --    own has them from A[3] ('fields' without a token; 'delete' takes none). First every merge's size is checked,
  --    against its session as the writes before it would leave it: if one is too large, nothing is written and
  --    -size is returned. Then every write runs, in order, and 1 is returned. The batch runs once per token.
  local writes, i = {}, 5
  while i <= #A do
    local own = {TTL, A[i + 1]}
    for j = 1, tonumber(A[i + 2]) do own[j + 2] = A[i + 2 + j] end
    writes[#writes + 1] = {KEYS[tonumber(A[i])], A[i + 1], own}
    i = i + 3 + tonumber(A[i + 2])
  end
  return once(A[3], A[4], function()
    local after = {}  -- hash -> what the writes checked so far would leave of it (see `merge`'s `dry`)
    for _, w in ipairs(writes) do
      bind(w[1])
      local o = after[H]
      if not o then
        local m = redis.call('HMGET', H, 'n', 'z')
        o = {exists = m[1] ~= false, n = tonumber(m[1] or 0), z = tonumber(m[2] or 0), len = {}, text = {}}
        after[H] = o
      end
      if w[2] == 'merge' then
        local size = merge(w[3], o)
        if size < 0 then return size end
      elseif w[2] == 'delete' then after[H] = {exists = false, n = 0, z = 0, len = {}, text = {}, wiped = true}
      elseif w[3][3] ~= 'live' and not o.exists then  -- 'fields' that creates the session
        after[H] = {exists = true, n = 0, z = 0, len = {}, text = {}, wiped = true}
      end
    end
    return 1, function()
      for _, w in ipairs(writes) do
        bind(w[1])
        if w[2] == 'merge' then merge(w[3])
        elseif w[2] == 'delete' then remove_session()
        else fields(w[3]) end
      end
    end
  end)
end

local OPS = {merge = merge, fields = fields, delete = delete, restore = restore, batch = batch}
if not OPS[OP] then return redis.error_reply('session.lua: unknown operation ' .. tostring(OP)) end
bind(KEYS[1])
return OPS[OP](ARGV)
