-- bench/webhook.sh: a signed webhook that starts a one-node run.
local o = require "orch"
return o.pipeline "bench-hook" {
  triggers = { o.webhook{ path = "/hooks/bench", secret = "BENCH_HOOK" } },
  o.node("ack", function(ctx, input) return { alerts = input.alerts and #input.alerts or 0 } end),
}
