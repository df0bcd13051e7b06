-- orch.transform (o.transform): reshaping data between pipeline steps.
--
-- Paths name a value inside nested tables: "a.b.c", "alerts[1].labels.severity" (indexes are
-- Lua's, from 1; [-1] is the last element), "alerts.1.labels" (a segment of digits is the
-- string key if there is one, else the index), ["key.with.dots"] or ['k'] for any key.
-- A missing value and JSON null (o.json.null) are the same thing here: absent.
--
-- Functions that build lists return them marked as arrays (o.json.array), so an empty result
-- is stored as [] and not {}. Misuse (a list that is not a table, a bad path) raises naming
-- the function; missing data never raises: get/extract give the default (or nil).
local core = require "orch.core"

local M = {}

local null, array_mt = core.null, core.array_mt
local type, tostring, tonumber, error, pairs = type, tostring, tonumber, error, pairs
local sort, concat = table.sort, table.concat

local function fail(fname, msg, level)
  error(("o.transform.%s: %s"):format(fname, msg), level + 1)
end

-- Parsed paths, kept for reuse (pipelines use a handful of paths, many times).
local parsed, nparsed = {}, 0

-- Returns the list of segments: strings (keys) and numbers (indexes), or nil and why.
local function parse_path(path)
  local segs = parsed[path]
  if segs then return segs end
  segs = {}
  local i, n = 1, #path
  if n == 0 then return nil, "empty path" end
  while i <= n do
    local c = path:sub(i, i)
    if c == "[" then
      local num, after = path:match("^%[%s*(%-?%d+)%s*%]()", i)
      if num then
        num = tonumber(num)
        if num == 0 then return nil, ("index [0] at column %d (indexes start at 1)"):format(i) end
        segs[#segs + 1] = num
        i = after
      else
        local q = path:match("^%[([\"'])", i)
        local key
        if q then key, after = path:match("^%[" .. q .. "(.-)" .. q .. "%]()", i) end
        if not key then
          return nil, ("expected [number] or [\"key\"] at column %d"):format(i)
        end
        segs[#segs + 1] = key
        i = after
      end
    else
      if c == "." then
        if i == 1 or i == n then return nil, ("misplaced '.' at column %d"):format(i) end
        i = i + 1
      elseif i ~= 1 then
        return nil, ("expected '.' or '[' at column %d"):format(i)
      end
      local name, after = path:match("^([^%.%[%]]+)()", i)
      if not name then return nil, ("expected a key at column %d"):format(i) end
      segs[#segs + 1] = name
      i = after
    end
  end
  if nparsed > 1000 then parsed, nparsed = {}, 0 end
  parsed[path], nparsed = segs, nparsed + 1
  return segs
end
M._parse_path = parse_path

-- The path's text up to segment k (for messages): alerts[1].labels
local function path_prefix(segs, k)
  local parts = {}
  for i = 1, k do
    local s = segs[i]
    if type(s) == "number" then
      parts[#parts + 1] = "[" .. s .. "]"
    elseif s:find("^[%a_][%w_%-]*$") or s:find("^%d+$") then
      parts[#parts + 1] = (i > 1 and "." or "") .. s
    else
      parts[#parts + 1] = ("[%q]"):format(s)
    end
  end
  return concat(parts)
end
M._path_prefix = path_prefix

-- Follows segs from t. Returns the value, or nil, the number of the segment that was missing
-- (or could not be entered), and the value before it.
local function lookup(t, segs)
  local cur = t
  for k = 1, #segs do
    if type(cur) ~= "table" then return nil, k, cur end
    local s = segs[k]
    local v
    if type(s) == "number" then
      if s < 0 then s = #cur + 1 + s end
      v = cur[s]
    else
      v = cur[s]
      if v == nil and s:find("^%d+$") then v = cur[tonumber(s)] end
    end
    if v == nil or v == null then return nil, k, cur end
    cur = v
  end
  return cur
end
M._lookup = lookup

local function check_path(fname, path, level)
  if type(path) ~= "string" then
    fail(fname, "path must be a string, got " .. type(path), level + 1)
  end
  local segs, why = parse_path(path)
  if not segs then fail(fname, ("bad path '%s': %s"):format(path, why), level + 1) end
  return segs
end

local function check_list(fname, list, level)
  if type(list) ~= "table" then
    fail(fname, "expected a list (table), got " .. type(list), level + 1)
  end
  return list
end

-- A key or predicate argument: a function, or a path whose value is read from each item.
local function accessor(fname, key, level)
  if type(key) == "function" then return key end
  if type(key) == "string" then
    local segs = check_path(fname, key, level + 1)
    return function(item) return (lookup(item, segs)) end
  end
  fail(fname, "expected a function or a path string, got " .. type(key), level + 1)
end

local function new_list() return setmetatable({}, array_mt) end

--- get(t, "a.b[2].c" [, default]) -> the value, or default (nil) when any part is missing.
function M.get(t, path, default)
  local segs = check_path("get", path, 2)
  local v = lookup(t, segs)
  if v == nil then return default end
  return v
end

--- pick(t, {"a", "b.c"}) -> a new table with only those paths, nested as in t. Missing paths
--- are left out.
function M.pick(t, paths)
  if type(paths) ~= "table" then fail("pick", "expected a list of paths, got " .. type(paths), 2) end
  local out = {}
  for i = 1, #paths do
    local segs = check_path("pick", paths[i], 2)
    local v = lookup(t, segs)
    if v ~= nil then
      local dst = out
      for k = 1, #segs - 1 do
        local s = segs[k]
        if dst[s] == nil then dst[s] = {} end
        dst = dst[s]
      end
      dst[segs[#segs]] = v
    end
  end
  return out
end

--- extract(t, { name = "path", other = { "path", default = x }, computed = function(t) end })
--- -> { name = value, ... }: a flat table built from paths. Missing values without a default
--- are left out.
function M.extract(t, spec)
  if type(spec) ~= "table" then
    fail("extract", "expected a table of name = path, got " .. type(spec), 2)
  end
  local out = {}
  for name, p in pairs(spec) do
    local v
    if type(p) == "string" then
      v = lookup(t, check_path("extract", p, 2))
    elseif type(p) == "function" then
      v = p(t)
    elseif type(p) == "table" and type(p[1]) == "string" then
      v = lookup(t, check_path("extract", p[1], 2))
      if v == nil then v = p.default end
    else
      fail("extract", ("'%s' must be a path, { path, default = ... } or a function, got %s")
                      :format(tostring(name), type(p)), 2)
    end
    if v ~= nil and v ~= null then out[name] = v end
  end
  return out
end

-- A predicate: a function(item, i), or a table of path = expected value (all must match).
local function predicate(fname, pred, level)
  if type(pred) == "function" then return pred end
  if type(pred) == "table" then
    local checks = {}
    for path, want in pairs(pred) do
      checks[#checks + 1] = { check_path(fname, path, level + 1), want }
    end
    return function(item)
      for i = 1, #checks do
        if lookup(item, checks[i][1]) ~= checks[i][2] then return false end
      end
      return true
    end
  end
  fail(fname, "expected a function or a table of path = value, got " .. type(pred), level + 1)
end

--- filter(list, function(item, i) return bool end) or filter(list, { ["labels.severity"] =
--- "critical" }) -> the items that match, in order.
function M.filter(list, pred)
  check_list("filter", list, 2)
  local ok = predicate("filter", pred, 2)
  local out = new_list()
  for i = 1, #list do
    local v = list[i]
    if ok(v, i) then out[#out + 1] = v end
  end
  return out
end

--- find(list, pred) -> the first item that matches and its index, or nil.
function M.find(list, pred)
  check_list("find", list, 2)
  local ok = predicate("find", pred, 2)
  for i = 1, #list do
    if ok(list[i], i) then return list[i], i end
  end
  return nil
end

--- map(list, function(item, i) return new end) or map(list, "path") -> the results, in order;
--- nil results (and missing paths) are left out.
function M.map(list, fn)
  check_list("map", list, 2)
  local f = accessor("map", fn, 2)
  local out = new_list()
  for i = 1, #list do
    local v = f(list[i], i)
    if v ~= nil then out[#out + 1] = v end
  end
  return out
end

-- Group keys must be usable as JSON object keys.
local function group_key(k)
  if k == nil or k == null then return nil end
  local t = type(k)
  if t == "string" or t == "number" then return k end
  return tostring(k)
end

--- group_by(list, key) -> { [key value] = { items... } }; key is a path or function(item, i).
--- Items without a key are left out.
function M.group_by(list, key)
  check_list("group_by", list, 2)
  local f = accessor("group_by", key, 2)
  local out = {}
  for i = 1, #list do
    local k = group_key(f(list[i], i))
    if k ~= nil then
      local g = out[k]
      if not g then g = new_list(); out[k] = g end
      g[#g + 1] = list[i]
    end
  end
  return out
end

--- count_by(list, key) -> { [key value] = count }.
function M.count_by(list, key)
  check_list("count_by", list, 2)
  local f = accessor("count_by", key, 2)
  local out = {}
  for i = 1, #list do
    local k = group_key(f(list[i], i))
    if k ~= nil then out[k] = (out[k] or 0) + 1 end
  end
  return out
end

local type_rank = { number = 1, string = 2, boolean = 3 }

--- sort_by(list, key [, { desc = true }]) -> a new list sorted by key (a path or a function);
--- stable; items whose key is missing go last. Numbers sort before strings before booleans.
function M.sort_by(list, key, opts)
  check_list("sort_by", list, 2)
  local f = accessor("sort_by", key, 2)
  local desc = type(opts) == "table" and opts.desc or false
  local rows = {}
  for i = 1, #list do
    local k = f(list[i], i)
    if k == null then k = nil end
    rows[i] = { k = k, i = i, v = list[i] }
  end
  sort(rows, function(a, b)
    local ka, kb = a.k, b.k
    if ka == nil or kb == nil then
      if ka == nil and kb == nil then return a.i < b.i end
      return kb == nil
    end
    local ta, tb = type(ka), type(kb)
    if ta ~= tb then
      return (type_rank[ta] or 9) < (type_rank[tb] or 9)
    end
    if ta == "boolean" then ka, kb = ka and 1 or 0, kb and 1 or 0
    elseif ta ~= "number" and ta ~= "string" then ka, kb = tostring(ka), tostring(kb) end
    if ka == kb then return a.i < b.i end
    if desc then return ka > kb end
    return ka < kb
  end)
  local out = new_list()
  for i = 1, #rows do out[i] = rows[i].v end
  return out
end

return M
