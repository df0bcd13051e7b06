-- o.ingest: alert payloads (Alertmanager webhook v4, Grafana unified alerting, a generic shape)
-- -> normalized incidents, stored and deduplicated by fingerprint.
--
-- A payload is checked completely before anything is stored: a wrong shape raises a
-- non-retryable error of type "ingest" that names the field (`alerts[2].labels must be an
-- object, got string`) and nothing is written. Indexes in messages are Lua's (from 1).
return function(M, core)
  local I = {}
  local null = core.null
  local array_mt = core.array_mt

  local function fail(fname, msg)
    M.fail(("o.ingest.%s: %s"):format(fname, msg), { type = "ingest", retryable = false })
  end

  local function tname(v)
    if v == null then return "null" end
    if type(v) == "table" then
      if getmetatable(v) == array_mt or (next(v) ~= nil and #v > 0) then return "array" end
      return "object"
    end
    return type(v)
  end

  local function absent(v) return v == nil or v == null end

  -- Field checkers: each returns the value (normalized) or raises naming `path`.
  local Check = {}
  Check.__index = Check
  local function checker(fname) return setmetatable({ fname = fname }, Check) end

  function Check:object(v, path, optional)
    if absent(v) then
      if optional then return {} end
      fail(self.fname, ("%s is required (an object)"):format(path))
    end
    local t = tname(v)
    if t ~= "object" and not (t == "array" and next(v) == nil) then
      fail(self.fname, ("%s must be an object, got %s"):format(path, t))
    end
    return v
  end

  function Check:array(v, path)
    local t = tname(v)
    if t ~= "array" and not (t == "object" and next(v) == nil) then
      fail(self.fname, ("%s must be an array, got %s"):format(path, absent(v) and "nothing" or t))
    end
    return v
  end

  function Check:string(v, path, optional)
    if absent(v) then
      if optional then return nil end
      fail(self.fname, ("%s is required (a string)"):format(path))
    end
    if type(v) ~= "string" then
      fail(self.fname, ("%s must be a string, got %s"):format(path, tname(v)))
    end
    return v
  end

  -- A map of name -> string (labels, annotations). Numbers and booleans become strings.
  function Check:string_map(v, path, optional)
    v = self:object(v, path, optional)
    local out = {}
    for k, x in pairs(v) do
      if type(k) ~= "string" then
        fail(self.fname, ("%s: keys must be strings, got %s"):format(path, type(k)))
      end
      local tx = type(x)
      if tx == "string" then out[k] = x
      elseif tx == "number" or tx == "boolean" then out[k] = tostring(x)
      elseif x ~= null then
        fail(self.fname, ("%s.%s must be a string, got %s"):format(path, k, tname(x)))
      end
    end
    return out
  end

  function Check:status(v, path)
    v = self:string(v, path)
    local s = v:lower()
    if s ~= "firing" and s ~= "resolved" then
      fail(self.fname, ("%s must be \"firing\" or \"resolved\", got %q"):format(path, v))
    end
    return s
  end

  -- ISO 8601 / RFC 3339 timestamps; Alertmanager's zero time means "not set".
  function Check:time(v, path)
    v = self:string(v, path, true)
    if v == nil or v == "" or v:match("^0001%-01%-01T") then return nil end
    if not v:match("^%d%d%d%d%-%d%d%-%d%d[T ]%d%d:%d%d") then
      fail(self.fname, ("%s must be an ISO 8601 time (2024-05-01T12:00:00Z), got %q")
                       :format(path, v))
    end
    return v
  end

  -- Severity from labels (severity, then priority, level), with the usual aliases.
  local SEVERITY = {}
  for _, s in ipairs { "critical", "crit", "emergency", "emerg", "alert", "fatal", "disaster",
                       "page", "high", "major", "error", "p0", "p1", "sev0", "sev1", "s1" } do
    SEVERITY[s] = "critical"
  end
  for _, s in ipairs { "warning", "warn", "average", "medium", "minor", "p2", "p3", "sev2",
                       "sev3", "s2", "s3" } do
    SEVERITY[s] = "warning"
  end
  for _, s in ipairs { "info", "information", "informational", "notice", "low", "debug",
                       "none", "ok", "p4", "p5", "sev4", "sev5", "s4", "s5" } do
    SEVERITY[s] = "info"
  end
  function I.severity(labels)
    for _, k in ipairs { "severity", "priority", "level" } do
      local v = labels and labels[k]
      if type(v) == "string" then
        local s = SEVERITY[v:lower():gsub("[%s%-_]", "")]
        if s then return s end
      end
    end
    return "unknown"
  end

  -- sha256 of the labels sorted by name ("name=value\n" each): the same labels, the same alert.
  function I.fingerprint(labels)
    local keys = {}
    for k in pairs(labels) do keys[#keys + 1] = k end
    table.sort(keys)
    local parts = {}
    for i, k in ipairs(keys) do parts[i] = k .. "=" .. tostring(labels[k]) .. "\n" end
    return core.sha256(table.concat(parts))
  end

  local function first(...)
    for i = 1, select("#", ...) do
      local v = select(i, ...)
      if type(v) == "string" and v ~= "" then return v end
    end
    return nil
  end

  -- The fields every source fills the same way.
  local function incident(source, labels, annotations, t)
    t.source = source
    t.labels = labels
    t.annotations = annotations
    t.severity = t.severity or I.severity(labels)
    t.summary = t.summary or first(annotations.summary, annotations.message, t.title)
    t.description = t.description or first(annotations.description, annotations.message)
    t.fingerprint = t.fingerprint or I.fingerprint(labels)
    return t
  end

  -- Alertmanager-style alert at `alerts[i]` (Alertmanager and Grafana).
  local function am_alert(c, a, path, source)
    c:object(a, path)
    local labels = c:string_map(a.labels, path .. ".labels")
    local annotations = c:string_map(a.annotations, path .. ".annotations", true)
    local fp = c:string(a.fingerprint, path .. ".fingerprint", source == "grafana")
    local t = incident(source, labels, annotations, {
      fingerprint = (fp ~= nil and fp ~= "") and fp or nil,
      title = first(labels.alertname, annotations.summary, annotations.title) or "(unnamed alert)",
      status = c:status(a.status, path .. ".status"),
      starts_at = c:time(a.startsAt, path .. ".startsAt"),
      ends_at = c:time(a.endsAt, path .. ".endsAt"),
      generator_url = first(c:string(a.generatorURL, path .. ".generatorURL", true)),
    })
    return t
  end

  local function common(c, payload, source)
    c:object(payload, "the payload")
    local g = {
      receiver = c:string(payload.receiver, "receiver", true),
      group_key = c:string(payload.groupKey, "groupKey", true),
      external_url = c:string(payload.externalURL, "externalURL", true),
      group_labels = c:string_map(payload.groupLabels, "groupLabels", true),
      common_labels = c:string_map(payload.commonLabels, "commonLabels", true),
      common_annotations = c:string_map(payload.commonAnnotations, "commonAnnotations", true),
    }
    c:status(payload.status, "status")
    local alerts = c:array(payload.alerts, "alerts")
    if #alerts == 0 then fail(c.fname, "alerts is empty: there is nothing to ingest") end
    local out = {}
    for i, a in ipairs(alerts) do
      local t = am_alert(c, a, ("alerts[%d]"):format(i), source)
      t.receiver, t.group_key, t.external_url = g.receiver, g.group_key, g.external_url
      out[i] = t
    end
    return out
  end

  local function check_opts(fname, opts)
    if opts ~= nil and type(opts) ~= "table" then
      error(("o.ingest.%s: options must be a table { store = false }, got %s")
            :format(fname, type(opts)), 3)
    end
    for k in pairs(opts or {}) do
      if k ~= "store" then
        error(("o.ingest.%s: unknown option '%s' (known: store)"):format(fname, tostring(k)), 3)
      end
    end
    return opts or {}
  end

  -- Stores the incidents (unless opts.store == false) and adds id, count, first_seen,
  -- last_seen, new (and resolved_at) to each.
  local function finish(fname, list, opts)
    setmetatable(list, array_mt)
    if opts.store == false then return list end
    local recs, err = core.record_incidents(list)
    if not recs then M.fail(("o.ingest.%s: %s"):format(fname, err), { type = "ingest" }) end
    for i, r in ipairs(recs) do
      local t = list[i]
      t.id, t.count, t.first_seen, t.last_seen, t.new = r.id, r.count, r.first_seen,
                                                         r.last_seen, r.new
      t.resolved_at = r.resolved_at
    end
    return list
  end

  --- o.ingest.alertmanager(payload [, { store = false }]) -> incidents
  function I.alertmanager(payload, opts)
    opts = check_opts("alertmanager", opts)
    local c = checker("alertmanager")
    c:object(payload, "the payload")
    if payload.version ~= "4" then
      fail("alertmanager", ("version must be \"4\" (Alertmanager webhook format), got %s")
                           :format(absent(payload.version) and "nothing"
                                   or type(payload.version) == "string"
                                      and ("%q"):format(payload.version)
                                   or tname(payload.version)))
    end
    return finish("alertmanager", common(c, payload, "alertmanager"), opts)
  end

  --- o.ingest.grafana(payload [, { store = false }]) -> incidents
  function I.grafana(payload, opts)
    opts = check_opts("grafana", opts)
    local c = checker("grafana")
    c:object(payload, "the payload")
    local title = c:string(payload.title, "title", true)
    local state = c:string(payload.state, "state", true)
    local message = c:string(payload.message, "message", true)
    if not absent(payload.orgId) and type(payload.orgId) ~= "number" then
      fail("grafana", "orgId must be a number, got " .. tname(payload.orgId))
    end
    local list = common(c, payload, "grafana")
    for i, t in ipairs(list) do
      local a = payload.alerts[i]
      local path = ("alerts[%d]"):format(i)
      if not absent(a.values) then t.values = c:object(a.values, path .. ".values") end
      t.dashboard_url = first(c:string(a.dashboardURL, path .. ".dashboardURL", true))
      t.panel_url = first(c:string(a.panelURL, path .. ".panelURL", true))
      t.silence_url = first(c:string(a.silenceURL, path .. ".silenceURL", true))
      t.value_string = first(c:string(a.valueString, path .. ".valueString", true))
      t.org_id = not absent(payload.orgId) and payload.orgId or nil
      t.group_title, t.state, t.message = title, state, message
    end
    return finish("grafana", list, opts)
  end

  --- o.ingest.generic(payload [, { store = false }]) -> incidents
  --- payload: one alert or a list of them: { title, severity?, status? ("firing"),
  --- fingerprint?, labels?, annotations?, summary?, description?, starts_at?, ends_at?,
  --- generator_url? }
  function I.generic(payload, opts)
    opts = check_opts("generic", opts)
    local c = checker("generic")
    local items, prefix = { payload }, ""
    if tname(payload) == "array" then
      items, prefix = payload, "[%d]"
    else
      c:object(payload, "the payload")
    end
    if #items == 0 then fail("generic", "the payload is an empty list: nothing to ingest") end
    local list = {}
    for i, a in ipairs(items) do
      local p = prefix == "" and "" or prefix:format(i)
      local function at(f) return p == "" and f or (p .. "." .. f) end
      c:object(a, p == "" and "the payload" or p)
      local labels = c:string_map(a.labels, at("labels"), true)
      local annotations = c:string_map(a.annotations, at("annotations"), true)
      local sev = c:string(a.severity, at("severity"), true)
      local t = incident("generic", labels, annotations, {
        title = c:string(a.title, at("title")),
        status = absent(a.status) and "firing" or c:status(a.status, at("status")),
        fingerprint = c:string(a.fingerprint, at("fingerprint"), true),
        severity = sev and I.severity { severity = sev } or nil,
        summary = c:string(a.summary, at("summary"), true),
        description = c:string(a.description, at("description"), true),
        starts_at = c:time(a.starts_at, at("starts_at")),
        ends_at = c:time(a.ends_at, at("ends_at")),
        generator_url = c:string(a.generator_url, at("generator_url"), true),
      })
      if t.title == "" then fail("generic", at("title") .. " must not be empty") end
      if t.fingerprint == "" then t.fingerprint = nil end
      if not t.fingerprint then
        -- No labels: the title stands for them, so the same alert still deduplicates.
        local l = labels
        if next(l) == nil then l = { title = t.title } end
        t.fingerprint = I.fingerprint(l)
      end
      list[i] = t
    end
    return finish("generic", list, opts)
  end

  return I
end
