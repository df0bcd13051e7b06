-- Alert triage: an Alertmanager or Grafana webhook payload -> incidents (deduplicated by
-- fingerprint) -> system context and recent logs, in parallel -> analysis -> route by severity
-- -> notify.
--
--   orchrun pipelines/alert-triage.lua                        # a built-in sample alert
--   orchrun pipelines/alert-triage.lua --input @payload.json  # or --input '{"version":"4",...}'
--
-- Input: the webhook payload itself (Alertmanager v4 or Grafana), or { payload = ..., ... }
-- with options beside it (all optional):
--   provider = "openai" | "anthropic", model = "...", base_url = "...",
--   api_key_secret = "OPENAI_API_KEY"   analyze with o.ai.chat (the key comes from o.secret);
--                                       without a provider, the local rules analyzer runs
--   notify_path = "..."                 where notifications are appended as JSON lines
--                                       (default: notifications.jsonl in the run's workspace)
--   logs_command = "..."                a shell command whose output is the "recent logs"
local o = require "orch"

local SAMPLE = {
  version = "4", status = "firing", receiver = "orchrun", groupKey = "{}:{alertname=\"HighMemoryUsage\"}",
  groupLabels = { alertname = "HighMemoryUsage" },
  commonLabels = { alertname = "HighMemoryUsage", severity = "warning" },
  commonAnnotations = {}, externalURL = "http://alertmanager.local:9093",
  alerts = {
    { status = "firing",
      labels = { alertname = "HighMemoryUsage", severity = "warning", instance = "app-1:9100",
                 job = "node" },
      annotations = { summary = "Memory usage above 90% on app-1",
                      description = "app-1 has used more than 90% of its memory for 10 minutes." },
      startsAt = "2024-05-01T12:00:00Z", endsAt = "0001-01-01T00:00:00Z",
      generatorURL = "http://prometheus.local:9090/graph?g0.expr=node_memory",
      fingerprint = "orchrun-sample-0001" },
  },
}

-- The payload and the options, whatever way the input gave them.
local function payload_of(input)
  if type(input.payload) == "table" then return input.payload end
  if input.alerts ~= nil then return input end
  return SAMPLE
end

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

-- Tells people: always on the console and in a JSON-lines file (local defaults), and on Slack
-- and PagerDuty when their secrets are configured (ORCHRUN_SECRET_SLACK_WEBHOOK_URL,
-- ORCHRUN_SECRET_PAGERDUTY_ROUTING_KEY, or the --secrets file). Pages go to PagerDuty with the
-- incident's fingerprint as dedup_key, so a repeated alert updates the same PagerDuty incident.
local function notify(ctx, level, analysis)
  local first = ctx.outputs.ingest.incidents[1]
  local severity = analysis.severity or first.severity
  local deliveries = {}
  deliveries.console = o.notify.console {
    incident = first, analysis = analysis, severity = severity,
    fields = { level = level, incident_id = first.id, count = first.count },
  }
  deliveries.file = o.notify.file {
    path = ctx.input.notify_path or (ctx.workspace .. "/notifications.jsonl"),
    incident = first, analysis = analysis, severity = severity,
    fields = { level = level, run_id = ctx.run_id, recommendations = analysis.recommendations },
  }
  local slack = o.secret("SLACK_WEBHOOK_URL", { optional = true })
  if slack then
    deliveries.slack = o.notify.slack { webhook_url = slack, incident = first, analysis = analysis }
  end
  local pd = level == "page" and o.secret("PAGERDUTY_ROUTING_KEY", { optional = true })
  if pd then
    deliveries.pagerduty = o.notify.pagerduty {
      routing_key = pd, incident = first, analysis = analysis, severity = severity,
      base_url = ctx.input.pagerduty_url,
    }
  end
  return { delivered = true, level = level, path = deliveries.file.target, deliveries = deliveries }
end

local function analyze_rules(ctx)
  local g = ctx.outputs.gather or {}
  return o.ai.rules(ctx.outputs.ingest.incidents,
                    { system = g.system, logs = g.logs and g.logs.text })
end

return o.pipeline "alert-triage" {
  description = "Alertmanager/Grafana alert -> incidents -> context -> analysis -> route -> notify",
  tags = { "ops", "alerts" },
  triggers = { o.webhook { path = "/hooks/alertmanager" } },
  defaults = { timeout = "60s", retry = { max = 2, base = "500ms" } },

  o.node("ingest", function(ctx)
    local p = payload_of(ctx.input)
    local incidents
    if p.orgId ~= nil or p.state ~= nil then
      incidents = o.ingest.grafana(p)
    else
      incidents = o.ingest.alertmanager(p)
    end
    for _, i in ipairs(incidents) do
      ctx.log(("%s incident #%d %s (%s, seen %d times)"):format(i.new and "new" or "known", i.id,
              i.title, i.status, i.count))
    end
    return { incidents = incidents, sample = p == SAMPLE }
  end, { retry = 1 }),

  o.parallel("gather", {
    o.node("system", function()
      local f, err = o.context.system { "cpu", "memory", "disk", "load", interval = "100ms" }
      if not f then o.fail(err) end
      return f
    end, { optional = true, timeout = "10s" }),
    o.node("logs", function(ctx)
      local cmd = ctx.input.logs_command
        or "journalctl -n 50 --no-pager -q 2>/dev/null || tail -n 50 /var/log/syslog 2>/dev/null || true"
      local r = o.exec { sh = cmd, timeout = "5s", max_output = 65536 }
      return { text = r and r.stdout or "", code = r and r.code }
    end, { optional = true, timeout = "10s" }),
  }),

  o.node("analyze", function(ctx)
    local i = ctx.input
    if not i.provider then return analyze_rules(ctx) end
    local first = ctx.outputs.ingest.incidents[1]
    local g = ctx.outputs.gather or {}
    local prompt = o.template([[
Alert: {{inc.title}} ({{inc.status}}, severity {{inc.severity}}, seen {{inc.count}} times)
Summary: {{inc.summary | default("-")}}
Description: {{inc.description | default("-")}}
Labels: {{inc.labels | json}}
System: {{sys | json}}
Recent logs (tail):
{{logs}}]], { inc = first, sys = g.system or {}, logs = ((g.logs or {}).text or ""):sub(-4000) })
    local r = o.ai.chat {
      provider = i.provider, model = i.model or "gpt-4o-mini", base_url = i.base_url,
      api_key_secret = i.api_key_secret, timeout = i.ai_timeout or "30s",
      system = "You are an SRE triaging an alert. Be brief and concrete.",
      prompt = prompt, schema = SCHEMA, max_tokens = 800,
    }
    local a = r.json
    a.analyzer, a.provider, a.model, a.usage = "ai", r.provider, r.model, r.usage
    return a
  end, { retry = { max = 2, base = "1s" },
         fallback = function(ctx) return analyze_rules(ctx) end }),

  o.switch("route", function(ctx) return ctx.outputs.analyze.severity end, {
    critical = o.node("page", function(ctx) return notify(ctx, "page", ctx.outputs.analyze) end),
    warning = o.node("ticket", function(ctx) return notify(ctx, "ticket", ctx.outputs.analyze) end),
    default = o.node("inform", function(ctx) return notify(ctx, "info", ctx.outputs.analyze) end),
  }),
}
