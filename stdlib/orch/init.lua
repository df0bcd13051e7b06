-- orch: the pipeline language.
--
-- Every constructor here only builds a table describing a step; nothing runs at load time.
-- Each table is marked with `__orch = <kind>` and remembers where it was written
-- (`__src`, `__line`) so that the C++ compiler can report errors as file:line.
-- Argument checking is left to the compiler on purpose: it sees the whole pipeline and reports
-- every problem at once instead of stopping at the first.
local core = require "orch.core"

local M = { _VERSION = core.version }

local getinfo = debug.getinfo

-- Where the pipeline author called us: `level` frames above the constructor.
local function where(level)
  local info = getinfo(level + 1, "Sl")
  if not info then return "?", 0 end
  local src = info.source or "?"
  if src:sub(1, 1) == "@" then src = src:sub(2) end
  return src, info.currentline or 0
end

-- Marks `t` as a step of `kind`, written where the constructor was called from. Callers must
-- not tail-call this (`return step(...)`): LuaJIT drops the constructor's frame on a tail
-- call and the line would be lost. They write `local s = step(...) return s`.
local function step(kind, t)
  t.__orch = kind
  t.__src, t.__line = where(3)
  return t
end

--- o.pipeline "name" { steps..., description=..., triggers=..., defaults=... }
--- or o.pipeline { name = "name", ... }
function M.pipeline(name_or_spec)
  if type(name_or_spec) == "table" then
    local spec = name_or_spec
    spec.__name = spec.name
    spec.name = nil
    local s = step("pipeline", spec)
    return s
  end
  local src, line = where(2)
  return function(spec)
    if type(spec) ~= "table" then
      error(("o.pipeline %q must be followed by a table of steps, got %s")
            :format(tostring(name_or_spec), type(spec)), 2)
    end
    spec.__orch, spec.__src, spec.__line = "pipeline", src, line
    spec.__name = name_or_spec
    return spec
  end
end

--- o.node(id, function(ctx, input) ... return {...} end, { retry=, timeout=, optional=, ... })
function M.node(...)
  local id, fn, opts = ...
  local s = step("node", { id = id, fn = fn, opts = opts, __nargs = select("#", ...) })
  return s
end

--- o.seq { steps... } or o.seq("id", { steps... })
function M.seq(id, steps)
  if type(id) == "table" and steps == nil then
    local s = step("seq", { children = id })
    return s
  end
  local s = step("seq", { id = id, children = steps })
  return s
end

--- o.parallel("id", { branches... }, { join = "all" | "any" | n, max = k })
function M.parallel(id, branches, opts)
  local s = step("parallel", { id = id, children = branches, opts = opts })
  return s
end

--- o.when("id", function(ctx, input) return cond end, then_step [, else_step])
function M.when(...)
  local id, cond, then_step, else_step = ...
  local s = step("when", { id = id, cond = cond, ["then"] = then_step, ["else"] = else_step,
                           __nargs = select("#", ...) })
  return s
end

--- o.switch("id", function(ctx, input) return key end, { key = step, ..., default = step })
function M.switch(id, selector, cases)
  local s = step("switch", { id = id, selector = selector, cases = cases })
  return s
end

--- o.approve("id", { message = "...", approvers = { "alice", "bob" }, timeout = "4h",
---                    on_timeout = "reject" | "approve" })
--- A human gate: the run waits (status awaiting_approval) until someone runs
--- `orchrun approve RUN id --as NAME` or `orchrun reject ...`. Its output when approved is
--- { approved = true, by = ..., comment = ..., decided_at = ... }; a rejection fails the step.
function M.approve(id, opts)
  local s = step("approve", { id = id, opts = opts })
  return s
end

--- o.wait("id", { signal = "ci_done", timeout = "2h", on_timeout = "fail" | "continue" })
--- Waits for a signal from outside: the run is parked (status waiting) until the signal is
--- delivered to it, by `POST /api/runs/RUN/signals/ci_done` with a JSON body or by
--- `orchrun signal RUN ci_done --data JSON`. The payload is the step's output. Past the timeout
--- the step fails (error type signal_timeout), or with on_timeout = "continue" succeeds with
--- { timed_out = true, signal = "ci_done" }. `signal` defaults to the step's id.
function M.wait(id, opts)
  local s = step("wait", { id = id, opts = opts })
  return s
end

--- o.map("id", items, step | function(ctx, item) ... end, { max = k, <node options> })
--- Fans out over a list known only at run time: `items` is a list or a function(ctx, input)
--- returning one. Each item runs `step` with the item as its input, as `id[1]`, `id[2]`, ...
--- (a named step inside is `id[2]/name`); ctx.index is the item's position. At most `max` at
--- once. The output is the list of the items' outputs, in the order of the items.
function M.map(...)
  local id, items, body, opts = ...
  local s = step("map", { id = id, items = items, body = body, opts = opts,
                          __nargs = select("#", ...) })
  return s
end

--- o.loop("id", { max = n, done = function(ctx, output) ... end, escalate = ... }, step)
--- Repeats `step` (a sub-graph or a function(ctx, input)) up to `max` times: iteration k runs
--- as `id#k` (a step "test" inside is `id#k/test`), gets the previous iteration's output as its
--- input (the loop's input the first time) and ctx.iteration = k. After each iteration `done`
--- decides; without `done`, the iteration's verdict does (see o.verdict). When `max` is reached
--- without success the loop escalates to a person (escalate = false: it fails instead).
function M.loop(id, opts, body)
  local s = step("loop", { id = id, opts = opts, body = body })
  return s
end

--- o.call("id", "other-pipeline", input, { timeout = ... })
--- Runs another pipeline (by name, or a .lua file beside this one) as a child run linked to
--- this one, and waits for it: its output is the child's output, and its failure fails this
--- step. `input` is a table, a function(ctx, input) returning one, or absent (this step's input).
function M.call(...)
  local id, target, input, opts = ...
  local s = step("call", { id = id, target = target, input = input, opts = opts,
                           __nargs = select("#", ...) })
  return s
end

--- Verdicts: what a node returns when it judges work (tests, reviews, checks).
---   return o.verdict.pass { ... }                       -- done
---   return o.verdict.retryable("tests_failed", { ... }) -- try again, under the node's retry
---   return o.verdict.needs_human_review("risky_change", { ... })
--- A retryable verdict retries the node under its retry policy; when the cap is reached, or on
--- needs_human_review, the run escalates to an approval gate at that node (escalate = false on
--- the node: it fails instead). Approving accepts the node's last output; rejecting fails it.
--- Each returns its output table with `verdict` and `reason` set.
local function verdict(kind)
  return function(reason, out)
    if type(reason) == "table" and out == nil then reason, out = nil, reason end
    out = out or {}
    if type(out) ~= "table" then
      error(("o.verdict.%s: the output must be a table, got %s"):format(kind, type(out)), 2)
    end
    out.verdict = kind
    if reason ~= nil then out.reason = tostring(reason) end
    return out
  end
end
M.verdict = {
  pass = verdict("pass"),
  retryable = verdict("retryable"),
  needs_human_review = verdict("needs_human_review"),
}

-- Triggers: declarations read by `orchrun serve`; a one-shot run ignores them.
function M.webhook(opts)
  local s = step("trigger", { type = "webhook", opts = opts })
  return s
end
function M.schedule(expr)
  if type(expr) == "table" then
    local s = step("trigger", { type = "schedule", opts = expr })
    return s
  end
  local s = step("trigger", { type = "schedule", opts = { cron = expr } })
  return s
end
function M.manual(opts)
  local s = step("trigger", { type = "manual", opts = opts or {} })
  return s
end

-- Async calls: each yields the node's coroutine until a libuv callback resumes it.
M.sleep = core.sleep

--- o.exec { "prog", "arg", ..., cwd=, env=, env_clear=, stdin=, timeout=, kill_grace=,
---          check=, max_output= }  or  o.exec "shell command"  or  o.exec { sh = "..." }
--- Returns { code, signal, stdout, stderr, duration_ms, timed_out, truncated, ok, pid }, or
--- nil, message, code when the process cannot be started. With check = true, anything but a
--- clean exit raises instead (a retryable error).
function M.exec(spec)
  local res, err, code = core.exec(spec)
  if type(spec) == "table" and spec.check then
    local what = spec.sh or table.concat(spec, " ")
    if not res then
      M.fail(("exec %s: %s"):format(what, err), { type = "exec", retryable = false })
    end
    if not res.ok then
      local why = res.timed_out and "timed out"
        or (res.signal ~= 0 and ("was killed by signal " .. res.signal))
        or ("exited with code " .. res.code)
      local tail = res.stderr ~= "" and res.stderr or res.stdout
      if #tail > 2000 then tail = "..." .. tail:sub(-2000) end
      M.fail(("command '%s' %s%s"):format(what, why, tail ~= "" and (": " .. tail) or ""),
             { type = "exec", retryable = true, details = { code = res.code, signal = res.signal } })
    end
  end
  return res, err, code
end

--- o.fs.read(path [, {max_bytes=}]) -> text | nil, message, code
--- o.fs.write(path, text [, {mkdirs=true, mode=420}]) -> bytes | nil, message, code
--- o.fs.append(path, text [, {mkdirs=true, mode=420}]) -> bytes | nil, message, code
--- All run off the loop thread; a write replaces the file atomically, an append is one
--- O_APPEND write (appenders never interleave).
M.fs = { read = core.read_file, write = core.write_file, append = core.append_file }

--- ctx:artifact(path [, { kind = "report" }]): records a file this node wrote in its run's
--- workspace (ctx.workspace; a relative path is taken from there) with its size and sha256.
--- Returns { name, path, size, sha256, kind, node }. A path that resolves outside the workspace
--- is refused (a non-retryable error). ctx.artifacts lists the artifacts of the nodes that
--- succeeded before this one, by name; ctx:use_artifact(name) returns one and records that this
--- node used it.
function M.__ctx_artifact(ctx, path, opts)
  local rec, err = core.artifact(ctx, path, opts)
  if not rec then M.fail(err, { type = "artifact", retryable = false }) end
  return rec
end
M.__ctx_use_artifact = core.use_artifact
--- o.http.request { url=, method=, headers=, query=, body= | json=, timeout=, follow_redirects=,
---                  max_body= }
--- Returns { status, ok, headers (lower-cased names), body, json, duration_ms, url } for any
--- HTTP status (a 404 or a 500 is a result, not an error), or nil, message, code when the
--- transfer fails; code is "timeout", "connect", "dns", "tls", "too_large" or "error".
--- o.http.get(url, opts), o.http.post(url, opts), o.http.put(...), o.http.delete(...) are
--- the same with the URL and the method given.
local function http_method(method)
  local fname = "o.http." .. method:lower()
  return function(url, opts)
    if type(url) ~= "string" then
      error(("%s expects a URL string first, got %s"):format(fname, type(url)), 2)
    end
    if opts ~= nil and type(opts) ~= "table" then
      error(("%s: options must be a table, got %s"):format(fname, type(opts)), 2)
    end
    local req = {}
    for k, v in pairs(opts or {}) do req[k] = v end
    if req.url ~= nil or req.method ~= nil then
      error(("%s: give the URL as the first argument, not 'url' or 'method' in the options")
            :format(fname), 2)
    end
    req.url, req.method = url, method
    local res, err, code = core.http_request(req)
    return res, err, code
  end
end
M.http = {
  request = core.http_request,
  get = http_method("GET"),
  post = http_method("POST"),
  put = http_method("PUT"),
  delete = http_method("DELETE"),
}
-- tostring() of a structured error is its message (a load-time error shows it, not "table").
local fail_mt = { __tostring = function(e) return e.message end }

--- o.fail(message [, { retryable = false, type = "..." }]) raises a structured error.
function M.fail(message, opts)
  opts = opts or {}
  error(setmetatable({ __orch_error = true, message = tostring(message),
                       retryable = opts.retryable, type = opts.type, details = opts.details },
                     fail_mt), 2)
end

--- The logger given to node bodies as ctx.log (and available as o.log):
--- ctx.log("message" [, fields]), ctx.log.warn("message" [, fields]); debug, info, warn, error.
local function level_fn(level)
  return function(a, b, c)
    -- Tolerate method-call style (ctx.log:warn("x")).
    if type(a) == "table" and getmetatable(a) == M.__logger_mt then a, b = b, c end
    core.log(level, a, b)
  end
end
M.__logger_mt = {
  __call = function(_, msg, fields) core.log("info", msg, fields) end,
}
M.logger = setmetatable({ debug = level_fn("debug"), info = level_fn("info"),
                          warn = level_fn("warn"), error = level_fn("error") }, M.__logger_mt)
M.log = M.logger

--- Parses "250ms", "5s", 1.5 ... into milliseconds.
M.duration_ms = core.duration_ms
M.now_ms = core.now_ms

--- o.json.encode(v [, { pretty = true, indent = n }]) -> text (raises on a value with no JSON
--- form, naming its path); o.json.decode(text) -> value | nil, "line:col: message".
--- Objects are written with sorted keys. See README "o.json" for null, arrays and big integers.
M.json = {
  encode = core.json_encode,
  decode = core.json_decode,
  null = core.null,
  -- Marks a table as a JSON array, so that an empty one encodes as [] and not {}.
  array = function(t) return setmetatable(t or {}, core.array_mt) end,
}

--- o.template(str, data [, { missing = "error" | "empty" | "keep" }]) -> text
M.__lazy_template = function() return require "orch.template" end

--- o.transform.get/pick/extract/filter/find/map/group_by/count_by/sort_by
M.__lazy_transform = function() return require "orch.transform" end

--- o.context.system { "cpu", "memory", "disk", "load", "processes", interval = "200ms",
---                    paths = { "/" } } -> facts | nil, message, code (async: yields)
M.context = { system = core.system }

--- o.ingest.alertmanager(payload) / o.ingest.grafana(payload) / o.ingest.generic(payload)
--- -> a list of normalized incidents, stored and deduplicated by fingerprint (README "o.ingest").
M.__lazy_ingest = function() return require("orch.ingest")(M, core) end

--- o.ai.rules(incident, context): a local rule-based analyzer; o.ai.chat { provider = ... }:
--- OpenAI chat completions or Anthropic messages over o.http.request (README "o.ai").
M.__lazy_ai = function() return require("orch.ai")(M, core) end

--- o.secret(name [, { optional = true }]) -> value
--- From $ORCHRUN_SECRET_<name>, else the secrets file (--secrets FILE, $ORCHRUN_SECRETS_FILE).
--- The value is redacted ("***") from everything orchrun stores or prints. A secret that is
--- not set raises a non-retryable error of type "secret" (with optional = true: returns nil).
function M.secret(name, opts)
  if type(name) ~= "string" then
    error("o.secret: the name must be a string, got " .. type(name), 2)
  end
  if opts ~= nil and type(opts) ~= "table" then error("o.secret: options must be a table", 2) end
  local v, err, kind = core.secret(name)
  if v then return v end
  if kind == "invalid" then error(err, 2) end
  if kind == "missing" and opts and opts.optional then return nil end
  M.fail(err, { type = "secret", retryable = false })
end

--- o.notify.slack / webhook / pagerduty / email / console / file { ... } -> delivery record
--- { driver, ok, status, attempts, duration_ms, id, target }; failures raise type "notify"
--- errors classified retryable or not (see stdlib/orch/notify.lua and README "Notifications").
M.__lazy_notify = function() return require "orch.notify" (M) end

-- The libraries above are compiled on first use (o.notify, o.ai, ...), not when a pipeline
-- loads: most pipelines use few of them, and a cold start should not pay for all.
setmetatable(M, {
  __index = function(t, k)
    local load = rawget(t, "__lazy_" .. tostring(k))
    if not load then return nil end
    local lib = load()
    rawset(t, k, lib)
    return lib
  end,
})

return M
