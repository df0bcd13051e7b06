-- A small pipeline that other pipelines call as a child run (see examples/agent-loop.lua):
--   o.call("notify", "notify", { text = "..." })
local o = require "orch"

return o.pipeline "notify" {
  o.node("send", function(ctx, input)
    local text = input.text or "(no text)"
    ctx.log("notifying", { text = text })
    return { delivered = true, text = text, channel = input.channel or "console" }
  end),
}
