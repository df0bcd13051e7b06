-- o.notify with the two local drivers: console (a log line, stored with the run) and file (a
-- JSON line appended to a file). Both run offline; slack, webhook, pagerduty and email take
-- the same incident and return the same kind of delivery record (README "Notifications").
--
--   orchrun examples/notify-local.lua
--   orchrun examples/notify-local.lua --input '{"severity":"critical"}'
local o = require "orch"

return o.pipeline "notify-local" {
  description = "Tell people about an incident without leaving the machine",

  o.node("incident", function(ctx, input)
    return {
      title = "Disk almost full on db1",
      summary = "/var is at 97% and grows 1% an hour",
      severity = input.severity or "warning",
      status = "firing",
      fingerprint = "db1-var-disk",
      labels = { host = "db1", mount = "/var" },
    }
  end),

  o.parallel("notify", {
    o.node("console", function(ctx)
      return o.notify.console { incident = ctx.outputs.incident, fields = { runbook = "disk" } }
    end),
    o.node("file", function(ctx)
      -- In the run's workspace here; a shared path (/var/log/orchrun/alerts.jsonl) in real use.
      return o.notify.file { path = ctx.workspace .. "/notifications/alerts.jsonl",
                             incident = ctx.outputs.incident }
    end),
  }),

  o.node("report", function(ctx, n)
    -- The parallel step's output: each branch's delivery record, by id.
    return { delivered = n.console.ok and n.file.ok, file = n.file.target,
             drivers = { n.console.driver, n.file.driver } }
  end),
}
