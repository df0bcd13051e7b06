-- orch.template (o.template): "{{ path | filter }}" substitution over tables.
--
--   o.template("{{alert.labels.severity}} on {{ alerts[1].labels.instance | default(\"?\") }}",
--              data [, { missing = "error" | "empty" | "keep" }])
--
-- Inside {{ }}: a path (the syntax of o.transform.get) or a "quoted string", then any number of
-- filters: default(x) (used when the value is missing or null; x is a "string", a number,
-- true or false), json, upper, lower, trim. Values render as text: strings as they are,
-- integral numbers without a decimal point, other numbers with up to 14 significant digits,
-- booleans as true/false, tables as compact JSON.
--
-- A missing value without a default raises naming the path, the part that is missing and the
-- position ({{ at line:column) in the template.
local core = require "orch.core"
local transform = require "orch.transform"

local parse_path, lookup, path_prefix =
  transform._parse_path, transform._lookup, transform._path_prefix
local null, json_encode = core.null, core.json_encode
local type, tostring, error, pcall = type, tostring, error, pcall
local floor, huge, concat, format = math.floor, math.huge, table.concat, string.format

local MISSING = {}  -- the value of a path that leads nowhere

-- A template error, re-raised by render() at the caller's line.
local function tfail(msg) error({ template_error = msg }, 0) end

local function position(str, at)
  local line, last_nl = 1, 0
  for nl in str:sub(1, at - 1):gmatch("()\n") do
    line, last_nl = line + 1, nl
  end
  return line, at - last_nl
end

local function where(str, at)
  local line, col = position(str, at)
  return ("line %d, column %d"):format(line, col)
end

-- JSON text of a value, or a template error saying why not (invalid UTF-8 in a string, a
-- value JSON cannot hold). Other errors (a node's deadline) pass on unchanged.
local function encode(v, what)
  local ok, res = pcall(json_encode, v)
  if ok then return res end
  if type(res) == "string" and res:find("o.json.encode: ", 1, true) then
    tfail(("%s: %s"):format(what, (res:gsub("^.-o%.json%.encode: ", ""))))
  end
  error(res, 0)
end

local function render_value(v, expr, str, at)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" then
    if v == floor(v) and v > -2 ^ 53 and v < 2 ^ 53 then return format("%.0f", v) end
    if v ~= v or v == huge or v == -huge then return tostring(v) end
    return format("%.14g", v)
  end
  if t == "boolean" then return tostring(v) end
  if t == "table" then
    return encode(v, ("cannot render {{%s}} at %s as JSON"):format(expr, where(str, at)))
  end
  tfail(("cannot render {{%s}} at %s: the value is a %s"):format(expr, where(str, at), t))
end

local filters = {
  default = function(v, arg) if v == MISSING or v == null then return arg end return v end,
  json = function(v)
    if v == MISSING then return v end
    return encode(v, "the json filter")
  end,
  upper = function(v) if type(v) == "string" then return v:upper() end return v end,
  lower = function(v) if type(v) == "string" then return v:lower() end return v end,
  trim = function(v)
    if type(v) == "string" then return (v:gsub("^%s+", ""):gsub("%s+$", "")) end
    return v
  end,
}
local filter_names = "default, json, upper, lower, trim"

-- A literal argument: "string", 'string', a number, true, false. Returns value, next index.
local function literal(expr, i)
  local q = expr:match("^([\"'])", i)
  if q then
    local s, after = expr:match("^" .. q .. "(.-)" .. q .. "()", i)
    if s then return s, after end
    return nil
  end
  local num, after = expr:match("^(%-?%d+%.?%d*)()", i)
  if num then return tonumber(num), after end
  local word
  word, after = expr:match("^(%a+)()", i)
  if word == "true" then return true, after end
  if word == "false" then return false, after end
  return nil
end

-- Evaluates one {{ expr }} found at `at` in str.
local function evaluate(expr, data, str, at, missing_mode)
  local function bad(why)
    tfail(("bad expression {{%s}} at %s: %s"):format(expr, where(str, at), why))
  end
  local i = expr:find("%S") or #expr + 1
  local value, path, gone
  local q = expr:match("^([\"'])", i)
  if q then
    local s, after = expr:match("^" .. q .. "(.-)" .. q .. "()", i)
    if not s then bad("unclosed string") end
    value, i = s, after
  else
    local p, after = expr:match("^([^|]-)%s*()|", i)
    if not p then p, after = expr:match("^(.-)%s*()$", i) end
    if p == "" then bad("expected a path or a \"string\"") end
    local segs, why = parse_path(p)
    if not segs then bad(("bad path '%s': %s"):format(p, why)) end
    local v, k, parent = lookup(data, segs)
    if v == nil then
      value, path = MISSING, p
      local seg = segs[k]
      seg = type(seg) == "number" and ("[" .. seg .. "]") or seg
      if k == 1 then
        gone = ("'%s' not found"):format(seg)
      elseif type(parent) ~= "table" then
        gone = ("'%s' is a %s, not a table"):format(path_prefix(segs, k - 1), type(parent))
      else
        gone = ("'%s' not found in '%s'"):format(seg, path_prefix(segs, k - 1))
      end
    else
      value = v
    end
    i = after
  end
  -- Filters.
  while true do
    i = expr:find("%S", i) or #expr + 1
    if i > #expr then break end
    if expr:sub(i, i) ~= "|" then bad(("unexpected '%s'"):format(expr:sub(i))) end
    local name, after = expr:match("^|%s*([%a_][%w_]*)()", i)
    if not name then bad("expected a filter name after '|'") end
    local f = filters[name]
    if not f then bad(("unknown filter '%s' (known: %s)"):format(name, filter_names)) end
    i = after
    local arg
    local open = expr:match("^%s*%(()", i)
    if open then
      local a, next_i = literal(expr, expr:find("%S", open) or open)
      if next_i == nil then bad(("%s(...) takes a \"string\", a number, true or false"):format(name)) end
      local close = expr:match("^%s*%)()", next_i)
      if not close then bad(("expected ')' after the argument of %s"):format(name)) end
      arg, i = a, close
    elseif name == "default" then
      bad("default needs a value: default(\"...\")")
    end
    value = f(value, arg)
  end
  if value == MISSING or value == null then
    if missing_mode == "empty" then return "" end
    if missing_mode == "keep" then return "{{" .. expr .. "}}" end
    tfail(("missing key '%s' at %s (%s; add | default(\"...\") to allow it)")
          :format(path or expr, where(str, at), gone or "the value is null"))
  end
  return render_value(value, expr, str, at)
end

local function render(str, data, opts)
  local missing_mode = opts and opts.missing or "error"
  local out, pos = {}, 1
  while true do
    local s, e = str:find("{{", pos, true)
    if not s then
      out[#out + 1] = str:sub(pos)
      break
    end
    out[#out + 1] = str:sub(pos, s - 1)
    local close = str:find("}}", e + 1, true)
    if not close then tfail(("unclosed '{{' at %s"):format(where(str, s))) end
    out[#out + 1] = evaluate(str:sub(e + 1, close - 1), data, str, s, missing_mode)
    pos = close + 2
  end
  return concat(out)
end

local modes = { error = true, empty = true, keep = true }

--- o.template(str, data [, { missing = "error" | "empty" | "keep" }]) -> text
return function(str, data, opts)
  if type(str) ~= "string" then
    error("o.template: the template must be a string, got " .. type(str), 2)
  end
  if data ~= nil and type(data) ~= "table" then
    error("o.template: data must be a table, got " .. type(data), 2)
  end
  if opts ~= nil then
    if type(opts) ~= "table" then error("o.template: options must be a table", 2) end
    for k in pairs(opts) do
      if k ~= "missing" then
        error(("o.template: unknown option '%s' (known: missing)"):format(tostring(k)), 2)
      end
    end
    if opts.missing ~= nil and not modes[opts.missing] then
      error("o.template: missing must be \"error\", \"empty\" or \"keep\"", 2)
    end
  end
  local ok, res = pcall(render, str, data or {}, opts)
  if ok then return res end
  if type(res) == "table" and res.template_error then error("o.template: " .. res.template_error, 2) end
  error(res, 0)  -- not ours (e.g. a node's deadline): passed on unchanged
end
