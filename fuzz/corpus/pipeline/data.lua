-- Reshaping data between steps: o.json to parse a payload, o.transform to pick and group what
-- matters, o.template to write the message. Offline and deterministic: the payload is inline
-- (an Alertmanager-style webhook body), or pass your own with --input '{"payload": "..."}'.
local o = require "orch"

local SAMPLE = [[
{
  "receiver": "ops",
  "groupKey": 12345678901234567890,
  "alerts": [
    { "status": "firing", "labels": { "alertname": "DiskFull", "severity": "critical",
      "instance": "db1:9100" }, "annotations": { "summary": "/var is 97% full" },
      "value": 97.2 },
    { "status": "firing", "labels": { "alertname": "HighLoad", "severity": "warning",
      "instance": "web1:9100" }, "annotations": { "summary": "load 7.9 on 2 cores" },
      "value": 7.9 },
    { "status": "resolved", "labels": { "alertname": "DiskFull", "severity": "critical",
      "instance": "db2:9100" }, "annotations": {}, "value": null },
    { "status": "firing", "labels": { "alertname": "CertExpiry", "severity": "warning",
      "instance": "lb1:443" }, "annotations": { "summary": "certificate expires in 6 days" },
      "value": 6 }
  ],
  "silenced": []
}
]]

local T = o.transform

return o.pipeline "data-demo" {
  description = "JSON payload -> picked, grouped, sorted -> a rendered message",

  o.node("parse", function(ctx, input)
    local payload, err = o.json.decode(input.payload or SAMPLE)
    -- Malformed input is data from outside: a clear, non-retryable failure with line:col.
    if not payload then o.fail("payload is not JSON: " .. err, { retryable = false }) end
    -- groupKey is beyond 2^53: it arrives as a string with every digit intact.
    return { alerts = payload.alerts, group = payload.groupKey, silenced = payload.silenced }
  end),

  o.node("shape", function(ctx, input)
    local firing = T.filter(input.alerts, { status = "firing" })
    local rows = T.map(T.sort_by(firing, "value", { desc = true }), function(a)
      return T.extract(a, { name = "labels.alertname", severity = "labels.severity",
                            host = "labels.instance",
                            summary = { "annotations.summary", default = "(no summary)" } })
    end)
    return {
      firing = rows,
      by_severity = T.count_by(firing, "labels.severity"),
      worst = T.get(rows, "[1].name"),
      hosts = T.map(T.group_by(firing, "labels.severity").critical or {}, "labels.instance"),
      silenced = input.silenced,  -- a decoded empty array: still [] when stored
    }
  end),

  o.node("render", function(ctx, shaped)
    local lines = {}
    for i, row in ipairs(shaped.firing) do
      lines[i] = o.template("- [{{severity | upper}}] {{name}} on {{host}}: {{summary}}", row)
    end
    local text = o.template([[
{{count}} firing alerts (group {{group}}), worst first: {{worst}}
critical: {{by_severity.critical | default(0)}}, warning: {{by_severity.warning | default(0)}}
{{lines}}]], {
      count = #shaped.firing, group = ctx.outputs.parse.group, worst = shaped.worst,
      by_severity = shaped.by_severity, lines = table.concat(lines, "\n"),
    })
    ctx.log(text)
    return { text = text, json = o.json.encode(shaped, { pretty = true }) }
  end),
}
