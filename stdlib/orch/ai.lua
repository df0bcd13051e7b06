-- o.ai: analysis of an incident.
--   o.ai.rules(incident, context)  a local, deterministic rule-based analyzer (no network)
--   o.ai.chat { provider = "openai" | "anthropic", ... }  one chat completion over HTTP
return function(M, core)
  local A = {}
  local array = M.json.array

  ----------------------------------------------------------------------------------------------
  -- Rules
  local RANK = { unknown = 0, info = 1, warning = 2, critical = 3 }
  local function raise_to(sev, floor)
    if (RANK[floor] or 0) > (RANK[sev] or 0) then return floor end
    return sev
  end

  -- Each rule: patterns looked for (plain, lower case) in the alert's name, title, summary,
  -- description and labels; the severity it implies at least; a cause; what to do.
  A.RULES = {
    { id = "instance_down", floor = "critical",
      patterns = { "instancedown", "targetdown", "hostdown", "nodedown", "servicedown",
                   " down", "unreachable", "not responding", "no data" },
      cause = "The target stopped answering: the host or the process is down, or the network "
              .. "path to it is broken",
      recommendations = { "Check that the host answers (ping, ssh) and the service runs "
                          .. "(systemctl status / kubectl get pods)",
                          "Look for a recent reboot, deploy or network change",
                          "Check the scrape target and firewall rules if the host itself is up" } },
    { id = "oom_killed", floor = "critical",
      patterns = { "oomkill", "oom_kill", "oom kill", "out of memory", "outofmemory" },
      cause = "A process was killed by the kernel's OOM killer: its memory limit is too low, or "
              .. "it leaks memory",
      recommendations = { "Confirm in the kernel log: dmesg -T | grep -i -E 'oom|killed process'",
                          "Raise the memory limit (container limits, systemd MemoryMax) if the "
                          .. "working set grew legitimately",
                          "Profile the process for a leak if its memory grows without bound" } },
    { id = "crash_loop", floor = "warning",
      patterns = { "crashloop", "backoff", "restarting", "restarts", "frequentrestart" },
      cause = "A container or service keeps crashing and being restarted",
      recommendations = { "Read the previous instance's logs: kubectl logs --previous "
                          .. "(or journalctl -u SERVICE)",
                          "Check the last configuration or image change and roll it back if it "
                          .. "coincides",
                          "Check liveness probes and start-up dependencies" } },
    { id = "disk_full", floor = "warning",
      patterns = { "disk", "filesystem", "volume", "inode", "nospace", "no space", "storage" },
      cause = "A filesystem is filling up",
      recommendations = { "Find what grew: du -xh --max-depth=2 / | sort -h | tail",
                          "Rotate or compress logs, remove old releases, caches and core dumps",
                          "Extend the volume if the growth is expected" } },
    { id = "high_memory", floor = "warning",
      patterns = { "memory", "mem ", "memusage", "swap" },
      cause = "Memory pressure: the working set is close to the host's or the container's limit",
      recommendations = { "List the largest consumers: ps aux --sort=-rss | head",
                          "Check for a leak (memory growing since the last restart)",
                          "Add memory or spread the load" } },
    { id = "high_cpu", floor = "warning",
      patterns = { "cpu", "load", "throttl" },
      cause = "CPU saturation: more work than cores, a runaway process or throttling",
      recommendations = { "List the busiest processes: top -b -n 1 | head -20",
                          "Check for a traffic spike, a hot loop or a batch job",
                          "Scale out or raise CPU limits if the load is legitimate" } },
    { id = "latency", floor = "warning",
      patterns = { "latency", "slow", "responsetime", "response time", "duration", "p99", "p95" },
      cause = "Requests are slow: a saturated resource, a slow dependency or lock contention",
      recommendations = { "Compare latency of the service's dependencies (database, upstream "
                          .. "APIs) over the same period",
                          "Check saturation: CPU, connection pools, queue depth",
                          "Check the last deploy for a regression" } },
    { id = "error_rate", floor = "warning",
      patterns = { "errorrate", "error rate", "errors", "5xx", "http5", "failure", "failed" },
      cause = "Requests are failing: a bad deploy, a failing dependency or overload",
      recommendations = { "Read the error logs for the dominant error",
                          "Roll back the last deploy if the errors started with it",
                          "Check the health of dependencies" } },
    { id = "certificate_expiry", floor = "warning",
      patterns = { "cert", "x509", "ssl", "tls" },
      cause = "A TLS certificate is about to expire (or has expired)",
      recommendations = { "Check the expiry: openssl s_client -connect HOST:443 </dev/null "
                          .. "| openssl x509 -noout -enddate",
                          "Renew it (certbot renew / your CA) and reload the server",
                          "Find out why automatic renewal did not run" } },
  }

  local function lower_text(inc)
    local parts = { inc.title or "", inc.summary or "", inc.description or "" }
    local labels = type(inc.labels) == "table" and inc.labels or {}
    local keys = {}
    for k in pairs(labels) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do
      if k ~= "severity" and k ~= "instance" and k ~= "job" then
        parts[#parts + 1] = tostring(labels[k])
      end
    end
    return " " .. table.concat(parts, " | "):lower()
  end

  local function num(v) return type(v) == "number" and v or nil end

  -- Context checks: system facts (o.context.system) that confirm a cause or raise severity.
  local function context_findings(sys)
    local f = {}
    if type(sys) ~= "table" then return f end
    local mem = type(sys.memory) == "table" and num(sys.memory.used_percent)
    if mem then
      if mem > 95 then f[#f + 1] = { rule = "high_memory", severity = "critical",
                                     evidence = ("memory %.1f%% used"):format(mem) }
      elseif mem > 90 then f[#f + 1] = { rule = "high_memory", severity = "warning",
                                         evidence = ("memory %.1f%% used"):format(mem) } end
    end
    if type(sys.disk) == "table" then
      for _, d in ipairs(sys.disk) do
        local p = type(d) == "table" and num(d.used_percent)
        if p and p > 95 then
          f[#f + 1] = { rule = "disk_full", severity = "critical",
                        evidence = ("disk %s %.1f%% used"):format(tostring(d.path), p) }
        elseif p and p > 90 then
          f[#f + 1] = { rule = "disk_full", severity = "warning",
                        evidence = ("disk %s %.1f%% used"):format(tostring(d.path), p) }
        end
      end
    end
    local cpu = type(sys.cpu) == "table" and num(sys.cpu.percent)
    if cpu and cpu > 95 then
      f[#f + 1] = { rule = "high_cpu", severity = "warning",
                    evidence = ("cpu %.1f%% busy"):format(cpu) }
    end
    local cores = type(sys.cpu) == "table" and num(sys.cpu.cores) or 1
    local load = type(sys.load) == "table" and num(sys.load.one)
    if load and cores and load / cores > 4 then
      f[#f + 1] = { rule = "high_cpu", severity = "warning",
                    evidence = ("load %.2f on %d cores"):format(load, cores) }
    end
    return f
  end

  local function rule_by_id(id)
    for _, r in ipairs(A.RULES) do if r.id == id then return r end end
  end

  --- o.ai.rules(incident | incidents, context) -> { analyzer = "rules", severity, summary,
  ---   probable_causes = { { id, cause, evidence } }, recommendations, confidence, matched }
  --- context: { system = o.context.system facts, logs = text } (or the facts themselves).
  function A.rules(incident, context)
    if type(incident) ~= "table" then
      error("o.ai.rules: the incident must be a table (an o.ingest result), got "
            .. type(incident), 2)
    end
    if context ~= nil and type(context) ~= "table" then
      error("o.ai.rules: the context must be a table, got " .. type(context), 2)
    end
    local list = incident[1] ~= nil and incident or { incident }
    local inc = list[1]
    if type(inc) ~= "table" then error("o.ai.rules: the incident list holds a " .. type(inc), 2) end
    context = context or {}
    local sys = context.system
    if sys == nil and (context.memory or context.cpu or context.disk) then sys = context end
    local logs = context.logs
    if type(logs) == "table" then logs = logs.stdout end
    logs = type(logs) == "string" and logs:lower() or ""

    local text = lower_text(inc)
    local causes, by_rule = {}, {}
    local severity = inc.severity or "unknown"
    local from_labels = severity ~= "unknown"
    for _, r in ipairs(A.RULES) do
      for _, p in ipairs(r.patterns) do
        if text:find(p, 1, true) then
          local c = { id = r.id, cause = r.cause, evidence = array { ("alert mentions '%s'")
                                                                      :format(p:gsub("^ ", "")) } }
          causes[#causes + 1] = c
          by_rule[r.id] = c
          if not from_labels then severity = raise_to(severity, r.floor) end
          break
        end
      end
    end
    if logs:find("out of memory", 1, true) or logs:find("oom-kill", 1, true)
       or logs:find("oomkilled", 1, true) then
      local c = by_rule.oom_killed
      if not c then
        local r = rule_by_id("oom_killed")
        c = { id = r.id, cause = r.cause, evidence = array {} }
        causes[#causes + 1] = c
        by_rule.oom_killed = c
      end
      c.evidence[#c.evidence + 1] = "the logs show the OOM killer"
    end
    local confirmed = 0
    for _, f in ipairs(context_findings(sys)) do
      severity = raise_to(severity, f.severity)
      local c = by_rule[f.rule]
      if not c then
        local r = rule_by_id(f.rule)
        c = { id = r.id, cause = r.cause, evidence = array {} }
        causes[#causes + 1] = c
        by_rule[f.rule] = c
      else
        confirmed = confirmed + 1
      end
      c.evidence[#c.evidence + 1] = f.evidence
    end
    if severity == "unknown" then severity = "warning" end
    local resolved = inc.status == "resolved"
    if resolved then severity = "info" end

    local recs, seen, matched = array {}, {}, array {}
    for _, c in ipairs(causes) do
      matched[#matched + 1] = c.id
      for _, rec in ipairs(rule_by_id(c.id).recommendations) do
        if not seen[rec] then seen[rec] = true; recs[#recs + 1] = rec end
      end
    end
    if #causes == 0 then
      recs[#recs + 1] = "No rule matched: read the alert's runbook"
                        .. (inc.annotations and inc.annotations.runbook_url
                            and (" (" .. inc.annotations.runbook_url .. ")") or "")
      recs[#recs + 1] = "Check the service's recent logs and deploys"
    end
    if resolved then table.insert(recs, 1, "The alert has resolved: confirm and close it") end

    local confidence = #causes == 0 and 0.2 or math.min(0.9, 0.5 + 0.1 * confirmed
                       + (#causes == 1 and 0.1 or 0))
    local where = inc.labels and (inc.labels.instance or inc.labels.host or inc.labels.pod
                                  or inc.labels.service or inc.labels.job)
    local summary = ("%s%s: %s%s"):format(resolved and "resolved " or "", severity,
                                          inc.title or "(untitled)",
                                          where and (" on " .. where) or "")
    if causes[1] then summary = summary .. " - " .. causes[1].cause:match("^[^:]+") end
    if #list > 1 then summary = summary .. (" (+%d more alerts)"):format(#list - 1) end
    return {
      analyzer = "rules",
      severity = severity,
      summary = summary,
      probable_causes = setmetatable(causes, core.array_mt),
      recommendations = recs,
      confidence = confidence,
      matched = matched,
      incident = { id = inc.id, fingerprint = inc.fingerprint, title = inc.title,
                   status = inc.status },
    }
  end

  ----------------------------------------------------------------------------------------------
  -- Chat
  local PROVIDERS = {
    openai = { base = "https://api.openai.com/v1", path = "/chat/completions",
               secret = "OPENAI_API_KEY" },
    anthropic = { base = "https://api.anthropic.com", path = "/v1/messages",
                  secret = "ANTHROPIC_API_KEY" },
  }
  local KNOWN = "provider, model, prompt, messages, system, schema, schema_name, base_url, "
                .. "api_key_secret, timeout, max_tokens, temperature"
  local KNOWN_SET = {}
  for k in KNOWN:gmatch("[%w_]+") do KNOWN_SET[k] = true end

  local function misuse(msg)
    M.fail("ai.chat: " .. msg, { type = "ai_config", retryable = false })
  end

  local function http_fail(provider, msg, retryable, details)
    M.fail(("ai.chat (%s): %s"):format(provider, msg),
           { type = "ai_http", retryable = retryable, details = details })
  end

  -- Retry-After: seconds, or an HTTP date we do not parse (kept as text).
  local function retry_after(headers)
    local v = headers and headers["retry-after"]
    if not v then return nil end
    local s = tonumber(v)
    if s then return math.floor(s * 1000 + 0.5) end
    return v
  end

  -- A JSON Schema subset: type, properties, required, items, enum. Returns nil or a message.
  local TYPES = {
    object = function(v) return type(v) == "table" and getmetatable(v) ~= core.array_mt
                                 and (next(v) == nil or v[1] == nil) end,
    array = function(v) return type(v) == "table" and (getmetatable(v) == core.array_mt
                                                        or next(v) == nil or v[1] ~= nil) end,
    string = function(v) return type(v) == "string" end,
    number = function(v) return type(v) == "number" end,
    integer = function(v) return type(v) == "number" and v == math.floor(v) end,
    boolean = function(v) return type(v) == "boolean" end,
    null = function(v) return v == core.null end,
  }
  local function vtype(v)
    if v == core.null then return "null" end
    if type(v) == "table" then return TYPES.array(v) and next(v) ~= nil and "array" or "object" end
    return type(v)
  end
  local function check_schema(v, schema, path)
    if type(schema) ~= "table" then return nil end
    local field = path == "" and "(the answer)" or path
    local t = schema.type
    if t ~= nil then
      local ok = false
      for _, tt in ipairs(type(t) == "table" and t or { t }) do
        if TYPES[tt] and TYPES[tt](v) then ok = true break end
      end
      if not ok then
        return ("field %s must be %s, got %s"):format(field,
          type(t) == "table" and table.concat(t, " or ") or t, vtype(v))
      end
    end
    if type(schema.enum) == "table" then
      local ok = false
      for _, e in ipairs(schema.enum) do if e == v then ok = true break end end
      if not ok then
        local vals = {}
        for i, e in ipairs(schema.enum) do vals[i] = tostring(e) end
        return ("field %s must be one of %s, got %s"):format(field, table.concat(vals, ", "),
                                                              tostring(v))
      end
    end
    if type(v) == "table" and TYPES.object(v) then
      for _, req in ipairs(schema.required or {}) do
        if v[req] == nil then
          return ("field %s is required"):format(path == "" and req or (path .. "." .. req))
        end
      end
      for k, sub in pairs(schema.properties or {}) do
        if v[k] ~= nil then
          local e = check_schema(v[k], sub, path == "" and k or (path .. "." .. k))
          if e then return e end
        end
      end
    end
    if type(v) == "table" and schema.items and TYPES.array(v) then
      for i, x in ipairs(v) do
        local e = check_schema(x, schema.items, ("%s[%d]"):format(path, i))
        if e then return e end
      end
    end
    return nil
  end
  A.check_schema = function(v, schema) return check_schema(v, schema, "") end

  local function build_messages(opts, provider)
    local msgs = {}
    local system = opts.system
    if opts.messages ~= nil then
      if type(opts.messages) ~= "table" then misuse("messages must be a list of {role, content}") end
      for i, m in ipairs(opts.messages) do
        if type(m) ~= "table" or type(m.role) ~= "string" or type(m.content) ~= "string" then
          misuse(("messages[%d] must be { role = \"user\" | \"assistant\" | \"system\", "
                  .. "content = \"...\" }"):format(i))
        end
        if provider == "anthropic" and m.role == "system" then
          system = system and (system .. "\n\n" .. m.content) or m.content
        else
          msgs[#msgs + 1] = { role = m.role, content = m.content }
        end
      end
    end
    if opts.prompt ~= nil then
      if type(opts.prompt) ~= "string" then misuse("prompt must be a string") end
      msgs[#msgs + 1] = { role = "user", content = opts.prompt }
    end
    if #msgs == 0 then misuse("give a prompt or messages") end
    if system ~= nil and type(system) ~= "string" then misuse("system must be a string") end
    if opts.schema ~= nil and provider == "anthropic" then
      -- No response_format in the Messages API: the schema goes into the instructions.
      local instr = "Answer with a single JSON object, and nothing else, that matches this JSON "
                    .. "Schema:\n" .. M.json.encode(opts.schema)
      system = system and (system .. "\n\n" .. instr) or instr
    end
    return array(msgs), system
  end

  local function parse_answer(provider, text)
    local body = text:match("^%s*```[%w]*%s*\n(.-)\n%s*```%s*$") or text
    local v, err = M.json.decode(body)
    if v == nil then
      M.fail(("ai.chat (%s): the answer is not JSON (%s): %s"):format(provider, err,
             #text > 200 and (text:sub(1, 200) .. "...") or text),
             { type = "ai_schema", retryable = true })
    end
    return v
  end

  --- o.ai.chat { provider =, model =, prompt = | messages =, system =, schema =, base_url =,
  ---             api_key_secret =, timeout =, max_tokens =, temperature = }
  --- -> { text, json (with schema), usage = { input_tokens, output_tokens }, model, provider }
  function A.chat(opts)
    if type(opts) ~= "table" then
      error("o.ai.chat expects a table { provider = ..., model = ..., prompt = ... }, got "
            .. type(opts), 2)
    end
    for k in pairs(opts) do
      if not KNOWN_SET[k] then misuse(("unknown option '%s' (known: %s)"):format(tostring(k), KNOWN)) end
    end
    local provider = opts.provider
    local p = PROVIDERS[provider]
    if not p then
      misuse(("unknown provider %s (known: anthropic, openai)")
             :format(provider == nil and "(none given)" or ("'" .. tostring(provider) .. "'")))
    end
    if type(opts.model) ~= "string" or opts.model == "" then misuse("model is required (a string)") end
    if opts.base_url ~= nil and type(opts.base_url) ~= "string" then misuse("base_url must be a string") end
    if opts.schema ~= nil and type(opts.schema) ~= "table" then misuse("schema must be a table (a JSON Schema)") end
    if opts.max_tokens ~= nil and type(opts.max_tokens) ~= "number" then misuse("max_tokens must be a number") end
    if opts.temperature ~= nil and type(opts.temperature) ~= "number" then misuse("temperature must be a number") end
    local msgs, system = build_messages(opts, provider)
    local key = M.secret(opts.api_key_secret or p.secret)
    local base = (opts.base_url or p.base):gsub("/+$", "")
    local req = { url = base .. p.path, method = "POST", timeout = opts.timeout or "60s" }
    if provider == "openai" then
      if system then table.insert(msgs, 1, { role = "system", content = system }) end
      req.headers = { Authorization = "Bearer " .. key }
      req.json = { model = opts.model, messages = msgs, max_tokens = opts.max_tokens,
                   temperature = opts.temperature }
      if opts.schema then
        req.json.response_format = { type = "json_schema",
                                     json_schema = { name = opts.schema_name or "answer",
                                                     schema = opts.schema } }
      end
    else
      req.headers = { ["x-api-key"] = key, ["anthropic-version"] = "2023-06-01" }
      req.json = { model = opts.model, messages = msgs, system = system,
                   max_tokens = opts.max_tokens or 1024, temperature = opts.temperature }
    end

    local res, err, code = M.http.request(req)
    if not res then
      http_fail(provider, ("request to %s failed (%s): %s"):format(base .. p.path, code, err),
                true, { code = code })
    end
    local data = res.json
    if data == nil then data = M.json.decode(res.body) end
    local function api_message()
      if type(data) == "table" and type(data.error) == "table" and data.error.message then
        return tostring(data.error.message)
      end
      local b = res.body or ""
      return #b > 300 and (b:sub(1, 300) .. "...") or b
    end
    if res.status == 429 or res.status >= 500 then
      http_fail(provider, ("HTTP %d: %s"):format(res.status, api_message()), true,
                { status = res.status, retry_after_ms = retry_after(res.headers) })
    elseif not res.ok then
      http_fail(provider, ("HTTP %d: %s"):format(res.status, api_message()), false,
                { status = res.status })
    end
    if type(data) ~= "table" then
      http_fail(provider, "malformed response: the body is not JSON: "
                .. (#res.body > 200 and (res.body:sub(1, 200) .. "...") or res.body), true,
                { status = res.status })
    end

    local text, usage
    if provider == "openai" then
      local choice = type(data.choices) == "table" and data.choices[1]
      local msg = type(choice) == "table" and choice.message
      text = type(msg) == "table" and msg.content
      if type(text) ~= "string" then
        http_fail(provider, "malformed response: no choices[1].message.content", true,
                  { status = res.status })
      end
      local u = type(data.usage) == "table" and data.usage or {}
      usage = { input_tokens = u.prompt_tokens, output_tokens = u.completion_tokens,
                total_tokens = u.total_tokens }
    else
      local parts = {}
      if type(data.content) == "table" then
        for _, b in ipairs(data.content) do
          if type(b) == "table" and b.type == "text" and type(b.text) == "string" then
            parts[#parts + 1] = b.text
          end
        end
      end
      if #parts == 0 then
        http_fail(provider, "malformed response: no text block in content", true,
                  { status = res.status })
      end
      text = table.concat(parts)
      local u = type(data.usage) == "table" and data.usage or {}
      usage = { input_tokens = u.input_tokens, output_tokens = u.output_tokens }
      if u.input_tokens and u.output_tokens then usage.total_tokens = u.input_tokens + u.output_tokens end
    end

    local out = { text = text, usage = usage, provider = provider,
                  model = type(data.model) == "string" and data.model or opts.model }
    if opts.schema then
      local v = parse_answer(provider, text)
      local e = check_schema(v, opts.schema, "")
      if e then
        M.fail(("ai.chat: answer does not match the schema: %s"):format(e),
               { type = "ai_schema", retryable = true })
      end
      out.json = v
    end
    return out
  end

  return A
end
