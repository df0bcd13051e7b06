-- o.notify: notification drivers (slack, webhook, pagerduty, email, console, file).
--
-- Each driver checks its options strictly, sends one notification and returns a delivery
-- record { driver, ok, status, attempts = 1, duration_ms, id, target }. A failure raises a
-- structured error (o.fail, type "notify") classified as retryable or not, so that the node's
-- retry policy does the right thing:
--   retryable:     timeouts, connection errors, HTTP 5xx, 408 and 429 (Retry-After is passed on
--                  as details.retry_after_ms), SMTP 4xx, a full disk
--   not retryable: other HTTP 4xx, SMTP 5xx, refused logins, TLS failures, bad options
-- With raise = false a delivery failure is returned instead: the record with ok = false and
-- error = { message, retryable, status, retry_after_ms }. Bad options always raise.
--
-- Secrets (webhook URLs, routing keys, passwords, HMAC keys) never go into the record: targets
-- are URLs without query, user info, and without the path when the URL holds a secret.
local core = require "orch.core"

return function(o)
  local N = {}

  -- Options ------------------------------------------------------------------------------------

  local function config_error(driver, msg)
    o.fail(("o.notify.%s: %s"):format(driver, msg),
           { type = "notify", retryable = false, details = { driver = driver } })
  end

  local function is_duration(v)
    if type(v) ~= "number" and type(v) ~= "string" then return false end
    local ok, ms = pcall(core.duration_ms, v)
    return ok and ms > 0
  end

  -- kinds: "string", "table", "boolean", "list" (a string or a list of strings), "duration",
  -- "text" (a string or a number), "any".
  local checks = {
    string = function(v) return type(v) == "string", "a string" end,
    text = function(v) return type(v) == "string" or type(v) == "number", "a string" end,
    table = function(v) return type(v) == "table", "a table" end,
    boolean = function(v) return type(v) == "boolean", "a boolean" end,
    duration = function(v) return is_duration(v), "a duration (seconds or \"10s\") above 0" end,
    list = function(v)
      if type(v) == "string" then return true end
      if type(v) ~= "table" or #v == 0 then return false, "a string or a list of strings" end
      for _, x in ipairs(v) do
        if type(x) ~= "string" then return false, "a string or a list of strings" end
      end
      return true
    end,
    any = function() return true end,
  }

  -- Checks `opts` against `schema` (name -> kind); raises naming the field.
  local function check_options(driver, opts, schema, required)
    if type(opts) ~= "table" then
      config_error(driver, "expects a table of options, got " .. type(opts))
    end
    local known = {}
    for k in pairs(schema) do known[#known + 1] = k end
    table.sort(known)
    for k, v in pairs(opts) do
      local kind = schema[k]
      if not kind then
        config_error(driver, ("unknown option '%s' (known: %s)")
                             :format(tostring(k), table.concat(known, ", ")))
      end
      local ok, what = checks[kind](v)
      if not ok then
        config_error(driver, ("'%s' must be %s, got %s"):format(k, what, type(v)))
      end
    end
    for _, k in ipairs(required or {}) do
      if opts[k] == nil or opts[k] == "" then config_error(driver, ("'%s' is required"):format(k)) end
    end
  end

  local function check_http_url(driver, field, url)
    if not url:match("^[hH][tT][tT][pP][sS]?://[^/?#]") then
      config_error(driver, ("'%s' must be an http:// or https:// URL"):format(field))
    end
    if url:find("[%s%c]") then
      config_error(driver, ("'%s' contains spaces or control characters"):format(field))
    end
  end

  local function check_headers(driver, headers)
    for k, v in pairs(headers or {}) do
      if type(k) ~= "string" or k == "" or k:find("[:%s%c]") then
        config_error(driver, ("'headers': invalid header name '%s'"):format(tostring(k)))
      end
      if type(v) ~= "string" and type(v) ~= "number" then
        config_error(driver, ("header '%s' must be a string or a number, got %s"):format(k, type(v)))
      end
      if tostring(v):find("%c") then
        config_error(driver, ("header '%s' contains a control character"):format(k))
      end
    end
  end

  -- Where a notification went, without secrets: scheme://host[:port][/path], without user info
  -- and query; without the path when asked or when the URL holds a secret value.
  local function url_target(url, keep_path)
    local scheme, rest = url:match("^(%a[%w+.-]*)://(.*)$")
    if not scheme then return "?" end
    local authority, path = rest:match("^([^/?#]*)(.*)$")
    authority = authority:gsub("^.*@", "")
    path = path:match("^[^?#]*")
    if not keep_path or core.has_secret(url) then path = "" end
    return scheme:lower() .. "://" .. authority .. path
  end

  -- Results ------------------------------------------------------------------------------------

  local function record(driver, target, started)
    return { driver = driver, ok = true, attempts = 1, target = target,
             duration_ms = math.max(0, core.now_ms() - started) }
  end

  -- A failed delivery: raises (type "notify") unless raise == false, then returns the record.
  local function failed(rec, opts, msg, retryable, extra)
    rec.ok = false
    local details = { driver = rec.driver, status = rec.status, target = rec.target }
    for k, v in pairs(extra or {}) do details[k] = v end
    msg = ("o.notify.%s: %s"):format(rec.driver, msg)
    if opts.raise == false then
      rec.error = { message = msg, retryable = retryable, status = rec.status,
                    retry_after_ms = details.retry_after_ms, code = details.code }
      return rec
    end
    o.fail(msg, { type = "notify", retryable = retryable, details = details })
  end

  local MONTHS = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6, Jul = 7, Aug = 8,
                   Sep = 9, Oct = 10, Nov = 11, Dec = 12 }

  -- Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
  local function days_from_civil(y, m, d)
    if m <= 2 then y = y - 1 end
    local era = math.floor(y / 400)
    local yoe = y - era * 400
    local mp = (m + 9) % 12
    local doy = math.floor((153 * mp + 2) / 5) + d - 1
    local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
    return era * 146097 + doe - 719468
  end

  -- Retry-After: delay-seconds or an HTTP-date -> milliseconds from now (nil when absent/bad).
  function N._retry_after_ms(value, now_ms)
    if type(value) ~= "string" then return nil end
    local secs = value:match("^%s*(%d+)%s*$")
    if secs then return tonumber(secs) * 1000 end
    local d, mon, y, hh, mm, ss = value:match("(%d+) (%a%a%a) (%d%d%d%d) (%d%d):(%d%d):(%d%d)")
    if not d or not MONTHS[mon] then return nil end
    local t = days_from_civil(tonumber(y), MONTHS[mon], tonumber(d)) * 86400
              + tonumber(hh) * 3600 + tonumber(mm) * 60 + tonumber(ss)
    return math.max(0, t * 1000 - (now_ms or core.now_ms()))
  end

  local function excerpt(s, n)
    s = tostring(s or ""):gsub("%s+", " ")
    if #s > n then s = s:sub(1, n) .. "..." end
    return s
  end

  -- Sends one HTTP request and classifies the outcome. On success returns rec, res. `accept`
  -- (optional) may turn a 2xx into a failure: it returns nil or a message.
  local function http_send(rec, opts, req, accept)
    local res, err, code = o.http.request(req)
    rec.duration_ms = math.max(rec.duration_ms, res and res.duration_ms or 0)
    if not res then
      -- The binding's message starts with "METHOD url:"; the target says where, without the
      -- path that may hold a token.
      local why = err or "?"
      local colon = why:find(": ", 1, true)
      if colon and why:sub(1, #req.method + 1) == req.method .. " " then why = why:sub(colon + 2) end
      local retryable = code == "timeout" or code == "connect" or code == "dns" or code == "error"
      return failed(rec, opts, ("%s %s: %s (%s)"):format(req.method, rec.target, why, code),
                    retryable, { code = code })
    end
    rec.status = res.status
    if res.status >= 200 and res.status < 300 then
      local bad = accept and accept(res)
      if not bad then return rec, res end
      return failed(rec, opts, bad, false)
    end
    local retry_after = N._retry_after_ms(res.headers["retry-after"])
    local retryable = res.status >= 500 or res.status == 429 or res.status == 408
    local msg = ("%s %s answered %d"):format(req.method, rec.target, res.status)
    local body = excerpt(res.body, 300)
    if body ~= "" then msg = msg .. ": " .. body end
    return failed(rec, opts, msg, retryable, { retry_after_ms = retry_after })
  end

  local function timeout_of(opts) return opts.timeout or "10s" end

  -- Incidents (o.ingest's normalized form; every field optional) -------------------------------

  local SEVERITY_EMOJI = { critical = ":rotating_light:", error = ":red_circle:",
                           warning = ":warning:", info = ":information_source:" }

  local function incident_title(inc)
    return tostring(inc.title or inc.name or inc.alertname or
                    (inc.labels and inc.labels.alertname) or "incident")
  end

  local function incident_summary(inc)
    local s = inc.summary or inc.description or
              (inc.annotations and (inc.annotations.summary or inc.annotations.description))
    return s and tostring(s) or nil
  end

  -- { {text=, url=}, ... } from incident.links (a list of strings, of {text|title, url|href},
  -- or a table name -> url) and the usual single URLs.
  local function incident_links(inc)
    local links = {}
    local function add(text, url)
      if type(url) == "string" and url:match("^https?://") then
        links[#links + 1] = { text = tostring(text or url), url = url }
      end
    end
    local l = inc.links
    if type(l) == "table" then
      if #l > 0 then
        for _, x in ipairs(l) do
          if type(x) == "string" then add(nil, x)
          elseif type(x) == "table" then add(x.text or x.title or x.name, x.url or x.href) end
        end
      else
        local names = {}
        for k in pairs(l) do names[#names + 1] = k end
        table.sort(names)
        for _, k in ipairs(names) do add(k, l[k]) end
      end
    end
    add("source", inc.generator_url or inc.url)
    add("dashboard", inc.dashboard_url)
    add("runbook", inc.runbook_url or (inc.annotations and inc.annotations.runbook_url))
    return links
  end

  local function sorted_pairs(t)
    local keys = {}
    for k in pairs(t or {}) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    local i = 0
    return function()
      i = i + 1
      local k = keys[i]
      if k ~= nil then return k, t[k] end
    end
  end

  local function analysis_text(a)
    if a == nil then return nil end
    if type(a) ~= "table" then return tostring(a) end
    local parts = {}
    local s = a.summary or a.text or a.explanation
    if s then parts[#parts + 1] = tostring(s) end
    if a.root_cause then parts[#parts + 1] = "*Likely cause:* " .. tostring(a.root_cause) end
    local acts = a.actions or a.recommendations or a.next_steps
    if type(acts) == "table" then
      for _, x in ipairs(acts) do parts[#parts + 1] = "• " .. tostring(x) end
    end
    if a.confidence then parts[#parts + 1] = "_confidence: " .. tostring(a.confidence) .. "_" end
    if #parts == 0 then return nil end
    return table.concat(parts, "\n")
  end

  local function clip(s, n)
    if #s > n then return s:sub(1, n - 3) .. "..." end
    return s
  end

  -- Block Kit for an incident: header (severity + title), summary, analysis, labels as fields,
  -- links as context.
  function N._incident_blocks(inc, analysis)
    local sev = tostring(inc.severity or "unknown"):lower()
    local resolved = inc.status == "resolved"
    local head = ("%s [%s] %s"):format(resolved and ":white_check_mark:" or
                                         (SEVERITY_EMOJI[sev] or ":bell:"),
                                       resolved and "RESOLVED" or sev:upper(), incident_title(inc))
    local blocks = {
      { type = "header", text = { type = "plain_text", text = clip(head, 150), emoji = true } },
    }
    local summary = incident_summary(inc)
    if summary then
      blocks[#blocks + 1] = { type = "section",
                              text = { type = "mrkdwn", text = clip(summary, 3000) } }
    end
    local at = analysis_text(analysis)
    if at then
      blocks[#blocks + 1] = { type = "section",
                              text = { type = "mrkdwn", text = clip("*Analysis*\n" .. at, 3000) } }
    end
    local fields = {}
    for k, v in sorted_pairs(inc.labels) do
      if #fields == 10 then break end  -- Slack's limit per section
      fields[#fields + 1] = { type = "mrkdwn", text = clip(("*%s*\n%s"):format(k, tostring(v)), 2000) }
    end
    if #fields > 0 then blocks[#blocks + 1] = { type = "section", fields = fields } end
    local ctx = {}
    for _, l in ipairs(incident_links(inc)) do
      if #ctx == 9 then break end
      ctx[#ctx + 1] = { type = "mrkdwn", text = ("<%s|%s>"):format(l.url, l.text) }
    end
    if inc.fingerprint then
      ctx[#ctx + 1] = { type = "mrkdwn", text = "fingerprint `" .. tostring(inc.fingerprint) .. "`" }
    end
    if #ctx > 0 then blocks[#blocks + 1] = { type = "context", elements = ctx } end
    return blocks, head
  end

  -- slack ---------------------------------------------------------------------------------------

  local SLACK = { webhook_url = "string", text = "text", blocks = "table", channel = "string",
                  username = "string", icon_emoji = "string", incident = "table",
                  analysis = "any", timeout = "duration", raise = "boolean" }

  --- o.notify.slack { webhook_url, text | blocks | incident (+ analysis), channel?, username?,
  ---                  icon_emoji?, timeout = "10s", raise = true }
  function N.slack(opts)
    check_options("slack", opts, SLACK, { "webhook_url" })
    check_http_url("slack", "webhook_url", opts.webhook_url)
    if opts.text == nil and opts.blocks == nil and opts.incident == nil then
      config_error("slack", "one of 'text', 'blocks' or 'incident' is required")
    end
    local body = { text = opts.text and tostring(opts.text), blocks = opts.blocks,
                   channel = opts.channel, username = opts.username, icon_emoji = opts.icon_emoji }
    if opts.incident and not opts.blocks then
      local blocks, head = N._incident_blocks(opts.incident, opts.analysis)
      body.blocks = blocks
      -- The text is what notifications and screen readers show.
      body.text = body.text or (head:gsub("^:[%w_]+: ", "") ..
                                (incident_summary(opts.incident) and
                                 (": " .. incident_summary(opts.incident)) or ""))
    end
    local started = core.now_ms()
    -- The path of a Slack webhook URL is its token.
    local rec = record("slack", url_target(opts.webhook_url, false), started)
    local r, res = http_send(rec, opts, { url = opts.webhook_url, method = "POST", json = body,
                                          timeout = timeout_of(opts) })
    if res and res.json and type(res.json.ts) == "string" then r.id = res.json.ts end
    return r
  end

  -- webhook -------------------------------------------------------------------------------------

  local WEBHOOK = { url = "string", json = "any", body = "string", headers = "table",
                    secret = "string", signature_header = "string", timestamp_header = "string",
                    method = "string", timeout = "duration", raise = "boolean" }

  --- o.notify.webhook { url, json = value | body = "raw", headers?, secret? (HMAC-SHA256 key),
  ---                    signature_header = "X-Orchrun-Signature", timestamp_header?,
  ---                    method = "POST", timeout = "10s", raise = true }
  --- With a secret, signature_header is "sha256=<hex HMAC of the body bytes>"; with a
  --- timestamp_header too, the header carries the Unix time in seconds and the HMAC covers
  --- "<timestamp>.<body>" (so a captured request cannot be replayed later with a new time).
  function N.webhook(opts)
    check_options("webhook", opts, WEBHOOK, { "url" })
    check_http_url("webhook", "url", opts.url)
    check_headers("webhook", opts.headers)
    if opts.json ~= nil and opts.body ~= nil then
      config_error("webhook", "'json' and 'body' cannot be used together")
    end
    local method = (opts.method or "POST"):upper()
    if not method:match("^%a+$") then
      config_error("webhook", "'method' must be a word like POST or PUT")
    end
    if opts.secret == "" then config_error("webhook", "'secret' must not be empty") end
    local body, ctype = opts.body, "text/plain; charset=utf-8"
    if opts.json ~= nil then
      local ok, text = pcall(o.json.encode, opts.json)
      if not ok then config_error("webhook", "'json': " .. tostring(text)) end
      body, ctype = text, "application/json"
    end
    local headers = {}
    local has_ctype = false
    for k, v in pairs(opts.headers or {}) do
      headers[k] = tostring(v)
      if k:lower() == "content-type" then has_ctype = true end
    end
    if body ~= nil and not has_ctype then headers["Content-Type"] = ctype end
    local signed = body or ""
    if opts.timestamp_header then
      local ts = tostring(math.floor(core.now_ms() / 1000))
      headers[opts.timestamp_header] = ts
      signed = ts .. "." .. signed
    end
    if opts.secret then
      headers[opts.signature_header or "X-Orchrun-Signature"] =
        "sha256=" .. core.hmac_sha256(opts.secret, signed)
    elseif opts.signature_header then
      config_error("webhook", "'signature_header' needs 'secret' (the HMAC key)")
    end
    local started = core.now_ms()
    local rec = record("webhook", url_target(opts.url, true), started)
    local r, res = http_send(rec, opts, { url = opts.url, method = method, headers = headers,
                                          body = body, timeout = timeout_of(opts) })
    if res then
      local j = type(res.json) == "table" and res.json or {}
      local id = j.id or j.delivery_id or res.headers["x-request-id"]
      if type(id) == "string" or type(id) == "number" then r.id = tostring(id) end
    end
    return r
  end

  -- pagerduty -----------------------------------------------------------------------------------

  local PAGERDUTY = { routing_key = "string", incident = "table", analysis = "any",
                      action = "string", event_action = "string", dedup_key = "text",
                      summary = "text", source = "string", severity = "string",
                      component = "string", group = "string", class = "string",
                      custom_details = "any", links = "table", images = "table",
                      timestamp = "string", client = "string", client_url = "string",
                      base_url = "string", timeout = "duration", raise = "boolean" }

  local PD_SEVERITY = { critical = "critical", error = "error", warning = "warning",
                        info = "info", page = "critical", high = "error", major = "error",
                        warn = "warning", minor = "warning", low = "info", none = "info" }

  --- o.notify.pagerduty { routing_key, action | event_action = "trigger" | "acknowledge" |
  ---   "resolve", dedup_key?, summary, source?, severity, component?, group?, class?,
  ---   custom_details?, links?, images?, timestamp?, incident?, analysis?, base_url?, timeout }
  --- Events API v2. With an incident, dedup_key defaults to its fingerprint, summary to its
  --- title, severity to its severity, and the action to "resolve" when it is resolved.
  function N.pagerduty(opts)
    check_options("pagerduty", opts, PAGERDUTY, { "routing_key" })
    local base = opts.base_url or "https://events.pagerduty.com"
    check_http_url("pagerduty", "base_url", base)
    if opts.action and opts.event_action and opts.action ~= opts.event_action then
      config_error("pagerduty", "'action' and 'event_action' disagree (give one)")
    end
    local inc = opts.incident or {}
    local action = opts.action or opts.event_action or
                   (inc.status == "resolved" and "resolve" or "trigger")
    if action ~= "trigger" and action ~= "acknowledge" and action ~= "resolve" then
      config_error("pagerduty", ("'action' must be trigger, acknowledge or resolve, got '%s'")
                                :format(action))
    end
    local dedup = opts.dedup_key or inc.fingerprint
    if dedup ~= nil then dedup = tostring(dedup) end
    if action ~= "trigger" and not dedup then
      config_error("pagerduty", ("'dedup_key' is required to %s (or an incident with a " ..
                                 "fingerprint)"):format(action))
    end
    local event = { routing_key = opts.routing_key, event_action = action, dedup_key = dedup }
    if action == "trigger" then
      local summary = opts.summary or (opts.incident and (incident_title(inc) ..
                        (incident_summary(inc) and (": " .. incident_summary(inc)) or "")))
      if not summary then config_error("pagerduty", "'summary' is required to trigger") end
      local sev = opts.severity or inc.severity
      if sev == nil then config_error("pagerduty", "'severity' is required to trigger") end
      local mapped = PD_SEVERITY[tostring(sev):lower()]
      if not mapped then
        if opts.severity then
          config_error("pagerduty", ("'severity' must be critical, error, warning or info, got '%s'")
                                    :format(tostring(sev)))
        end
        mapped = "error"  -- an incident's own vocabulary: page rather than drop it
      end
      local details = opts.custom_details
      if details == nil and opts.incident then
        details = { labels = inc.labels, annotations = inc.annotations,
                    analysis = opts.analysis, fingerprint = inc.fingerprint,
                    started_at = inc.started_at }
      end
      event.payload = {
        summary = clip(tostring(summary), 1024),
        source = opts.source or inc.source or (inc.labels and inc.labels.instance) or "orchrun",
        severity = mapped, component = opts.component, group = opts.group,
        class = opts.class, custom_details = details,
        timestamp = opts.timestamp,
      }
      local links = opts.links
      if links == nil and opts.incident then
        links = {}
        for _, l in ipairs(incident_links(inc)) do
          links[#links + 1] = { href = l.url, text = l.text }
        end
        if #links == 0 then links = nil end
      end
      event.links = links
      event.images = opts.images
      event.client = opts.client
      event.client_url = opts.client_url
    end
    local started = core.now_ms()
    local rec = record("pagerduty", url_target(base:gsub("/+$", "") .. "/v2/enqueue", true),
                       started)
    local r, res = http_send(rec, opts, { url = base:gsub("/+$", "") .. "/v2/enqueue",
                                          method = "POST", json = event,
                                          timeout = timeout_of(opts) })
    if res then
      local j = type(res.json) == "table" and res.json or nil
      r.id = (j and type(j.dedup_key) == "string" and j.dedup_key) or dedup
      r.action = action
    end
    return r
  end

  -- email ---------------------------------------------------------------------------------------

  local EMAIL = { smtp_url = "string", from = "string", to = "list", cc = "list", bcc = "list",
                  reply_to = "string", subject = "text", text = "text", html = "string",
                  username = "string", password = "string", starttls = "string",
                  timeout = "duration", raise = "boolean" }

  local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

  function N._base64(s)
    local out = {}
    for i = 1, #s, 3 do
      local a, b, c = s:byte(i, i + 2)
      local n = a * 65536 + (b or 0) * 256 + (c or 0)
      local c1 = math.floor(n / 262144) % 64
      local c2 = math.floor(n / 4096) % 64
      local c3 = math.floor(n / 64) % 64
      local c4 = n % 64
      out[#out + 1] = B64:sub(c1 + 1, c1 + 1) .. B64:sub(c2 + 1, c2 + 1) ..
                      (b and B64:sub(c3 + 1, c3 + 1) or "=") .. (c and B64:sub(c4 + 1, c4 + 1) or "=")
    end
    return table.concat(out)
  end

  local function ascii(s) return not s:find("[\128-\255]") end

  -- RFC 2047 encoded-words for a header value that is not plain ASCII; each word holds whole
  -- UTF-8 characters and stays under 76 characters.
  function N._encode_header(s)
    if ascii(s) then return s end
    local words, chunk = {}, ""
    for ch in s:gmatch("[%z\1-\127\194-\244][\128-\191]*") do
      if #chunk + #ch > 45 then
        words[#words + 1] = "=?UTF-8?B?" .. N._base64(chunk) .. "?="
        chunk = ""
      end
      chunk = chunk .. ch
    end
    if chunk ~= "" then words[#words + 1] = "=?UTF-8?B?" .. N._base64(chunk) .. "?=" end
    return table.concat(words, "\r\n ")
  end

  -- "Name <a@b>" or "a@b" -> address, display name (nil when none).
  local function parse_address(driver, field, s)
    if s:find("[\r\n]") then config_error(driver, ("'%s' contains a line break"):format(field)) end
    local name, addr = s:match("^%s*(.-)%s*<([^<>%s]+)>%s*$")
    if not addr then addr = s:match("^%s*([^<>%s]+)%s*$") end
    if not addr or not addr:match("^[^@]+@[^@]+$") then
      config_error(driver, ("'%s': '%s' is not an email address"):format(field, s))
    end
    if name then name = name:gsub('^"(.*)"$', "%1") end
    return addr, (name ~= "" and name or nil)
  end

  local function format_address(addr, name)
    if not name then return addr end
    if ascii(name) then
      return ('"%s" <%s>'):format(name:gsub('["\\]', "\\%0"), addr)
    end
    return N._encode_header(name) .. " <" .. addr .. ">"
  end

  local function as_list(v)
    if v == nil then return {} end
    if type(v) == "string" then return { v } end
    return v
  end

  -- A text part's body and transfer encoding: 7bit when it is ASCII with short lines, else
  -- base64 (wrapped at 76). Line ends become CRLF.
  local function encode_body(text)
    text = text:gsub("\r?\n", "\n")
    local long = false
    for line in (text .. "\n"):gmatch("([^\n]*)\n") do
      if #line > 900 then long = true break end
    end
    if ascii(text) and not long then return "7bit", (text:gsub("\n", "\r\n")) end
    local b = N._base64(text:gsub("\n", "\r\n"))
    local lines = {}
    for i = 1, #b, 76 do lines[#lines + 1] = b:sub(i, i + 75) end
    return "base64", table.concat(lines, "\r\n")
  end

  local function part(ctype, text)
    local cte, body = encode_body(text)
    return ("Content-Type: %s; charset=utf-8\r\nContent-Transfer-Encoding: %s\r\n\r\n%s")
           :format(ctype, cte, body)
  end

  -- Builds the RFC 5322 message. Returns message, message_id.
  function N._email_message(m)
    local domain = m.from_addr:match("@(.+)$") or "orchrun.local"
    local id = ("<%s.orchrun@%s>"):format(core.new_id(), domain)
    local h = {
      "Date: " .. os.date("!%a, %d %b %Y %H:%M:%S +0000", math.floor(m.now_ms / 1000)),
      "Message-ID: " .. id,
      "From: " .. m.from,
      "To: " .. table.concat(m.to, ",\r\n "),
    }
    if #m.cc > 0 then h[#h + 1] = "Cc: " .. table.concat(m.cc, ",\r\n ") end
    if m.reply_to then h[#h + 1] = "Reply-To: " .. m.reply_to end
    h[#h + 1] = "Subject: " .. N._encode_header(m.subject)
    h[#h + 1] = "MIME-Version: 1.0"
    h[#h + 1] = "X-Mailer: orchrun/" .. core.version
    local body
    if m.html then
      local boundary = "=_orchrun_" .. core.new_id()
      h[#h + 1] = ('Content-Type: multipart/alternative; boundary="%s"'):format(boundary)
      body = table.concat({
        "This is a multipart message in MIME format.",
        "--" .. boundary, part("text/plain", m.text or ""),
        "--" .. boundary, part("text/html", m.html),
        "--" .. boundary .. "--", "",
      }, "\r\n")
    else
      local cte, b = encode_body(m.text or "")
      h[#h + 1] = "Content-Type: text/plain; charset=utf-8"
      h[#h + 1] = "Content-Transfer-Encoding: " .. cte
      body = b .. "\r\n"
    end
    return table.concat(h, "\r\n") .. "\r\n\r\n" .. body, id
  end

  --- o.notify.email { smtp_url = "smtp://host:port" | "smtps://...", from, to, cc?, bcc?,
  ---   reply_to?, subject, text, html?, username?, password?, starttls = "required" | "try" |
  ---   "off", timeout = "30s", raise = true }
  function N.email(opts)
    check_options("email", opts, EMAIL, { "smtp_url", "from", "to", "subject" })
    local url = opts.smtp_url
    if not url:match("^[sS][mM][tT][pP][sS]?://[^/?#]") then
      config_error("email", "'smtp_url' must be smtp://host[:port] or smtps://host[:port]")
    end
    if url:find("[%s%c]") then config_error("email", "'smtp_url' contains spaces") end
    if opts.text == nil and opts.html == nil then
      config_error("email", "one of 'text' or 'html' is required")
    end
    local subject = tostring(opts.subject)
    if subject:find("[\r\n]") then config_error("email", "'subject' contains a line break") end
    local starttls = opts.starttls
    if starttls == nil then
      -- A password is not sent in the clear unless asked for.
      starttls = (opts.password and url:lower():match("^smtp://")) and "required" or "try"
    end
    if starttls ~= "required" and starttls ~= "try" and starttls ~= "off" then
      config_error("email", ("'starttls' must be required, try or off, got '%s'"):format(starttls))
    end
    local from_addr, from_name = parse_address("email", "from", opts.from)
    local rcpt, to, cc = {}, {}, {}
    for _, field in ipairs({ "to", "cc", "bcc" }) do
      for _, s in ipairs(as_list(opts[field])) do
        local addr, name = parse_address("email", field, s)
        rcpt[#rcpt + 1] = addr
        if field == "to" then to[#to + 1] = format_address(addr, name)
        elseif field == "cc" then cc[#cc + 1] = format_address(addr, name) end
      end
    end
    local reply_to
    if opts.reply_to then reply_to = format_address(parse_address("email", "reply_to", opts.reply_to)) end
    local started = core.now_ms()
    local message, id = N._email_message {
      from_addr = from_addr, from = format_address(from_addr, from_name), to = to, cc = cc,
      reply_to = reply_to, subject = subject, text = opts.text and tostring(opts.text),
      html = opts.html, now_ms = started,
    }
    local rec = record("email", table.concat(rcpt, ", "), started)
    rec.server = url_target(url, false)
    local res, err, code, status = core.smtp_send {
      url = url, from = from_addr, rcpt = rcpt, message = message,
      username = opts.username, password = opts.password, starttls = starttls,
      timeout = core.duration_ms(opts.timeout or "30s"),
    }
    rec.duration_ms = math.max(0, core.now_ms() - started)
    if not res then
      rec.status = (status and status > 0) and status or nil
      local retryable
      if rec.status then
        retryable = rec.status >= 400 and rec.status < 500  -- SMTP 4xx: try again later
      else
        retryable = code == "timeout" or code == "connect" or code == "dns" or code == "error"
      end
      if code == "auth" or code == "tls" then retryable = false end
      local why = (err or "?"):gsub("^SMTP [^ ]+: ", "")
      return failed(rec, opts, ("SMTP %s: %s%s"):format(rec.server, why,
                                                     rec.status and (" (" .. rec.status .. ")") or ""),
                    retryable, { code = code })
    end
    rec.status = res.status
    rec.id = id
    return rec
  end

  -- console and file ----------------------------------------------------------------------------

  local LOCAL = { text = "text", title = "text", severity = "string", incident = "table",
                  analysis = "any", fields = "table", level = "string" }

  local LEVELS = { debug = true, info = true, warn = true, error = true }
  local LEVEL_OF = { critical = "error", error = "error", warning = "warn", warn = "warn" }

  -- What console and file notifications say: title, severity, text.
  local function local_message(opts)
    local inc = opts.incident or {}
    local sev = opts.severity or inc.severity
    local title = opts.title or (opts.incident and incident_title(inc))
    local text = opts.text or (opts.incident and incident_summary(inc)) or
                 analysis_text(opts.analysis)
    if opts.incident and inc.status == "resolved" then sev = "resolved" end
    return title and tostring(title), text and tostring(text), sev and tostring(sev)
  end

  --- o.notify.console { text | title | incident (+ analysis), severity?, fields?, level? }
  --- Logs "[SEVERITY] title: text" through the node's logger (stored as a log event, shown
  --- by the CLI).
  function N.console(opts)
    check_options("console", opts, LOCAL)
    local title, text, sev = local_message(opts)
    if not title and not text then
      config_error("console", "one of 'text', 'title' or 'incident' is required")
    end
    local level = opts.level or LEVEL_OF[sev and sev:lower() or ""] or "info"
    if not LEVELS[level] then
      config_error("console", ("'level' must be debug, info, warn or error, got '%s'"):format(level))
    end
    local started = core.now_ms()
    local line = (sev and ("[" .. sev:upper() .. "] ") or "") .. (title or "") ..
                 ((title and text) and ": " or "") .. (text or "")
    local fields = { notify = "console" }
    for k, v in pairs(opts.fields or {}) do fields[k] = v end
    if opts.incident then
      fields.fingerprint = opts.incident.fingerprint
      fields.labels = opts.incident.labels
    end
    core.log(level, line, fields)
    local rec = record("console", "log", started)
    return rec
  end

  local FILE = { path = "string", json = "any", mkdirs = "boolean", raise = "boolean" }
  for k, v in pairs(LOCAL) do FILE[k] = v end

  --- o.notify.file { path, text | title | incident | json, ..., mkdirs = true, raise = true }
  --- Appends one JSON line to path (one O_APPEND write: concurrent writers never interleave),
  --- creating missing directories. The line is `json` as given, or { ts, title, text,
  --- severity, incident, analysis, fields }.
  function N.file(opts)
    check_options("file", opts, FILE, { "path" })
    local entry = opts.json
    if entry == nil then
      local title, text, sev = local_message(opts)
      if not title and not text then
        config_error("file", "one of 'text', 'title', 'incident' or 'json' is required")
      end
      local ms = core.now_ms()
      entry = { ts = os.date("!%Y-%m-%dT%H:%M:%S", math.floor(ms / 1000)) ..
                     (".%03dZ"):format(ms % 1000),
                title = title, text = text, severity = sev, incident = opts.incident,
                analysis = opts.analysis, fields = opts.fields }
    end
    local ok, line = pcall(o.json.encode, entry)
    if not ok then config_error("file", tostring(line)) end
    local started = core.now_ms()
    local rec = record("file", opts.path, started)
    local n, err, code = core.append_file(opts.path, line .. "\n",
                                          { mkdirs = opts.mkdirs ~= false })
    rec.duration_ms = math.max(0, core.now_ms() - started)
    if not n then
      local permanent = { EACCES = true, EPERM = true, EROFS = true, EISDIR = true,
                          ENOTDIR = true, ENAMETOOLONG = true, ELOOP = true }
      return failed(rec, opts, err, not permanent[code], { code = code })
    end
    rec.bytes = n
    return rec
  end

  return N
end
