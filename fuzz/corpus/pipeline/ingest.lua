-- o.ingest: an Alertmanager webhook payload -> normalized incidents, stored and deduplicated by
-- fingerprint (run it twice: the second run sees count = 2). Every event after the ingest
-- carries the incident's id and fingerprint.
local o = require "orch"

local payload = {
  version = "4", status = "firing", receiver = "team-ops", groupKey = "{}:{alertname=\"DiskFull\"}",
  groupLabels = { alertname = "DiskFull" }, commonLabels = { alertname = "DiskFull" },
  commonAnnotations = {}, externalURL = "http://alertmanager.local:9093",
  alerts = {
    { status = "firing", labels = { alertname = "DiskFull", severity = "page", instance = "db-1" },
      annotations = { summary = "/var is 97% full on db-1" },
      startsAt = "2024-05-01T10:00:00Z", endsAt = "0001-01-01T00:00:00Z",
      generatorURL = "http://prometheus.local/graph", fingerprint = "example-diskfull-db-1" },
    { status = "resolved", labels = { alertname = "DiskFull", severity = "page", instance = "db-2" },
      annotations = { summary = "/var is 97% full on db-2" },
      startsAt = "2024-05-01T09:00:00Z", endsAt = "2024-05-01T09:30:00Z",
      generatorURL = "http://prometheus.local/graph", fingerprint = "example-diskfull-db-2" },
  },
}

return o.pipeline "ingest-demo" {
  o.node("ingest", function(ctx)
    local incidents = o.ingest.alertmanager(ctx.input.alerts and ctx.input or payload)
    for _, i in ipairs(incidents) do
      ctx.log(("#%d %s [%s, %s] seen %d times%s"):format(i.id, i.title, i.severity, i.status,
              i.count, i.new and " (new)" or ""))
    end
    return { incidents = incidents }
  end),
  o.node("summary", function(ctx)
    local firing = 0
    for _, i in ipairs(ctx.outputs.ingest.incidents) do
      if i.status == "firing" then firing = firing + 1 end
    end
    return { firing = firing, total = #ctx.outputs.ingest.incidents }
  end),
}
