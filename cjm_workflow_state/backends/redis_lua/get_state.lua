-- get_state.lua: a session's state as the text of its JSON object, or nil when the session does not exist.
--
-- KEYS: 1 the session's hash.
-- A state field is named by its key as JSON text (so the name starts with '"') and holds the value's canonical JSON:
-- the object is the fields joined, '{"k1":v1,"k2":v2}'. The other fields (s, l, c, u, n, z) are not state.
-- The store sends this for small states only: one string is the cheapest reply to read, but Lua is slow at building
-- big strings, so for a large state the store reads the hash with HGETALL and joins the fields itself.
local a = redis.call('HGETALL', KEYS[1])
if #a == 0 then return false end
local t = {}
for i = 1, #a, 2 do
  if string.byte(a[i], 1) == 34 then t[#t + 1] = a[i] .. ':' .. a[i + 1] end
end
return '{' .. table.concat(t, ',') .. '}'
