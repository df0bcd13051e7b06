-- o.ai.rules: the local analyzer (no network). Deterministic: the same incident and context
-- always give the same answer. Here the context is given; in a real pipeline it comes from
-- o.context.system (see pipelines/alert-triage.lua).
local o = require "orch"

return o.pipeline "ai-rules-demo" {
  o.node("analyze", function()
    local incidents = o.ingest.generic({
      title = "KubePodCrashLooping", severity = "warning",
      labels = { namespace = "shop", pod = "checkout-7d9f", reason = "OOMKilled" },
      annotations = { description = "Pod shop/checkout-7d9f is restarting 5 times / 10 minutes." },
    }, { store = false })
    local a = o.ai.rules(incidents[1], {
      system = { memory = { used_percent = 96.5 }, disk = { { path = "/", used_percent = 40 } } },
    })
    return { severity = a.severity, summary = a.summary, causes = a.matched,
             first_step = a.recommendations[1], confidence = a.confidence }
  end),
}
