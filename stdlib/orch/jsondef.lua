-- orch.jsondef: the node bodies of pipelines written as JSON definitions.
--
-- engine/json_pipeline.cc checks a JSON definition and translates each of its nodes into an
-- o.node (or an o.when for a condition) whose body is made here, so that a JSON pipeline runs
-- the same library calls as its Lua form would (o.ingest, o.context.system, o.ai, o.transform,
-- o.notify). The translator has checked the configuration; what is left to check here is what
-- only a run knows (a payload's shape, a missing value at a path).
--
-- Paths ("analyze.severity", "ingest.incidents[1]", "input.payload"): the first segment names a
-- node (its output, ctx.outputs.<id>) or `input` (the run's input); the rest is an o.transform
-- path into it. A node that has not run (yet, or in a branch not taken) has no output: nil.
local o = require "orch"

local J = {}
local null = o.json.null
local array_mt = getmetatable(o.json.array {})

local function resolve(ctx, path)
  local head, rest = path:match("^([^%.%[]+)(.*)$")
  local root
  if head == "input" then root = ctx.input else root = ctx.outputs[head] end
  if rest == "" or root == nil then return root end
  if rest:sub(1, 1) == "." then rest = rest:sub(2) end
  return o.transform.get(root, rest)
end
J.resolve = resolve

local function is_list(v)
  return type(v) == "table" and (getmetatable(v) == array_mt or #v > 0)
end

local function fail(kind, msg)
  o.fail(msg, { type = kind, retryable = false })
end

--- ingest { driver = "alertmanager" | "grafana" | "generic", payload_from = path?, store = bool? }
--- The payload is the run's input (or the value at payload_from). Output: { incidents = [...] }.
function J.ingest(cfg)
  local ingest = o.ingest[cfg.driver]
  local opts = cfg.store == false and { store = false } or nil
  return function(ctx)
    local payload = ctx.input
    if cfg.payload_from then payload = resolve(ctx, cfg.payload_from) end
    return { incidents = ingest(payload, opts) }
  end
end

--- context { include = { "cpu", "memory", "disk", "load", "processes" }, interval?, paths? }
--- Output: o.context.system's facts.
function J.context(cfg)
  local req = { interval = cfg.interval, paths = cfg.paths }
  for i, f in ipairs(cfg.include) do req[i] = f end
  return function()
    local facts, err = o.context.system(req)
    if not facts then o.fail(err, { type = "context" }) end
    return facts
  end
end

-- The answer o.ai.chat must give (as pipelines/alert-triage.lua asks for it).
local SCHEMA = {
  type = "object",
  required = { "severity", "summary", "probable_causes", "recommendations" },
  properties = {
    severity = { type = "string", enum = { "critical", "warning", "info" } },
    summary = { type = "string" },
    probable_causes = { type = "array", items = { type = "string" } },
    recommendations = { type = "array", items = { type = "string" } },
    confidence = { type = "number" },
  },
}
J.SCHEMA = SCHEMA

local PROMPT = [[
Alert: {{incident.title}} ({{incident.status}}, severity {{incident.severity}}, seen {{incident.count | default(1)}} times)
Summary: {{incident.summary | default("-")}}
Description: {{incident.description | default("-")}}
Labels: {{incident.labels | json}}
System: {{context | json}}]]
local SYSTEM = "You are an SRE triaging an alert. Be brief and concrete."

local function incidents_of(cfg, ctx)
  local list = resolve(ctx, cfg.incidents_from)
  if type(list) ~= "table" then
    fail("intelligence", ("no incidents at %s (got %s)"):format(cfg.incidents_from,
                                                                 list == nil and "nothing"
                                                                 or type(list)))
  end
  return list
end

local function rules(cfg, ctx)
  local context = cfg.context_from and resolve(ctx, cfg.context_from) or nil
  return o.ai.rules(incidents_of(cfg, ctx), { system = context })
end

--- intelligence { provider = "local" | "openai" | "anthropic", incidents_from = path,
---                context_from = path?, model?, base_url?, api_key_secret?, prompt?, system?,
---                max_tokens?, temperature? }
--- local: o.ai.rules. openai/anthropic: o.ai.chat with a JSON schema; the output is its answer
--- with analyzer = "ai", provider, model and usage (the translator adds the rules as the node's
--- fallback unless fallback = false).
function J.intelligence(cfg)
  if cfg.provider == "local" then return function(ctx) return rules(cfg, ctx) end end
  return function(ctx)
    local list = incidents_of(cfg, ctx)
    local first = list[1] or list
    local context = cfg.context_from and resolve(ctx, cfg.context_from) or nil
    local prompt = o.template(cfg.prompt or PROMPT, { incident = first, context = context or {},
                                                      input = ctx.input })
    local r = o.ai.chat {
      provider = cfg.provider, model = cfg.model, base_url = cfg.base_url,
      api_key_secret = cfg.api_key_secret, system = cfg.system or SYSTEM, prompt = prompt,
      schema = SCHEMA, max_tokens = cfg.max_tokens or 800, temperature = cfg.temperature,
    }
    local a = r.json
    a.analyzer, a.provider, a.model, a.usage = "ai", r.provider, r.model, r.usage
    return a
  end
end

--- The local rules, as the fallback of an openai/anthropic intelligence node.
function J.rules_fallback(cfg)
  return function(ctx) return rules(cfg, ctx) end
end

--- transform { source_node?, extract = path?, filter_priority = "critical" | { ... }?,
---             mapping = { name = path }? }
--- The value is the source node's output (default: this step's input), then the value at
--- `extract`, then (a list) the items whose `priority` or `severity` is one of filter_priority,
--- then each item (or the value) mapped to { name = value at path }. Output: that value; a value
--- that is not a table is given as { value = ... }.
function J.transform(cfg)
  local wanted
  if cfg.filter_priority then
    wanted = {}
    local list = type(cfg.filter_priority) == "table" and cfg.filter_priority
                 or { cfg.filter_priority }
    for _, p in ipairs(list) do wanted[tostring(p):lower()] = true end
  end
  return function(ctx, input)
    local v = input
    if cfg.source_node then v = ctx.outputs[cfg.source_node] end
    if cfg.extract then
      if type(v) == "table" then v = o.transform.get(v, cfg.extract) else v = nil end
    end
    if wanted then
      if not is_list(v) and not (type(v) == "table" and next(v) == nil) then
        fail("transform", ("filter_priority needs a list, got %s"):format(
                           v == nil and "nothing" or type(v) == "table" and "an object" or type(v)))
      end
      v = o.transform.filter(v, function(item)
        if type(item) ~= "table" then return false end
        local p = item.priority
        if p == nil or p == null then p = item.severity end
        return p ~= nil and p ~= null and wanted[tostring(p):lower()] == true
      end)
    end
    if cfg.mapping then
      if is_list(v) then
        v = o.transform.map(v, function(item)
          return type(item) == "table" and o.transform.extract(item, cfg.mapping) or nil
        end)
      elseif type(v) == "table" then
        v = o.transform.extract(v, cfg.mapping)
      else
        v = {}
      end
    end
    if type(v) ~= "table" then return { value = v } end
    return v
  end
end

-- What an email says when the definition gives no subject or text.
local function email_subject(inc, an)
  local sev = (an and an.severity) or (inc and inc.severity) or "info"
  local title = (inc and inc.title) or (an and an.summary) or "orchrun notification"
  return ("[%s] %s"):format(tostring(sev):upper(), tostring(title))
end

local function email_text(inc, an)
  local lines = {}
  if inc then
    lines[#lines + 1] = ("%s (%s)"):format(tostring(inc.title or "?"), tostring(inc.status or "?"))
    if inc.summary then lines[#lines + 1] = tostring(inc.summary) end
  end
  if an then
    if an.summary then lines[#lines + 1] = "" lines[#lines + 1] = tostring(an.summary) end
    if type(an.recommendations) == "table" and #an.recommendations > 0 then
      lines[#lines + 1] = ""
      for _, r in ipairs(an.recommendations) do lines[#lines + 1] = "- " .. tostring(r) end
    end
  end
  return table.concat(lines, "\n")
end

--- notify(driver, options, { incident = path?, analysis = path?, secrets = { field = NAME } })
--- Calls o.notify.<driver> with the options, each `secrets` field set from o.secret(NAME), and
--- the incident and analysis found at their paths: given to slack, pagerduty, console and file
--- as incident/analysis; a webhook's default JSON body is { incident, analysis, run_id }; an
--- email's default subject and text are made from them.
function J.notify(driver, opts, refs)
  local send = o.notify[driver]
  return function(ctx)
    local args = {}
    for k, v in pairs(opts) do args[k] = v end
    for field, name in pairs(refs.secrets or {}) do args[field] = o.secret(name) end
    local inc = refs.incident and resolve(ctx, refs.incident) or nil
    local an = refs.analysis and resolve(ctx, refs.analysis) or nil
    if type(inc) ~= "table" then inc = nil end
    if driver == "webhook" then
      if args.json == nil and args.body == nil then
        args.json = { incident = inc, analysis = an, run_id = ctx.run_id }
      end
    elseif driver == "email" then
      if args.subject == nil then args.subject = email_subject(inc, an) end
      if args.text == nil and args.html == nil then args.text = email_text(inc, an) end
    else
      if args.incident == nil then args.incident = inc end
      if args.analysis == nil then args.analysis = an end
    end
    return send(args)
  end
end

--- when { path = ..., equals | not_equals | in | exists | gt | gte | lt | lte = ... }
--- A condition's test: with only a path, whether the value there is truthy (not nil, null or
--- false).
function J.when(spec)
  return function(ctx)
    local v = resolve(ctx, spec.path)
    if v == null then v = nil end
    if spec.equals ~= nil then return v == spec.equals end
    if spec.not_equals ~= nil then return v ~= spec.not_equals end
    if spec["in"] ~= nil then
      for _, x in ipairs(spec["in"]) do if v == x then return true end end
      return false
    end
    if spec.exists ~= nil then return (v ~= nil) == spec.exists end
    if spec.gt ~= nil then return type(v) == "number" and v > spec.gt end
    if spec.gte ~= nil then return type(v) == "number" and v >= spec.gte end
    if spec.lt ~= nil then return type(v) == "number" and v < spec.lt end
    if spec.lte ~= nil then return type(v) == "number" and v <= spec.lte end
    return v ~= nil and v ~= false
  end
end

return J
