-- A human gate: the run prepares a change, then waits for a person. The one-shot stops with
-- exit code 4 (awaiting approval) and prints the commands to decide; after
--   orchrun approve RUN apply_gate --as alice --comment "ok"
--   orchrun resume RUN
-- the run continues where it stopped: `plan` is not run again.
local o = require "orch"

return o.pipeline "approval-demo" {
  o.node("plan", function()
    local r = o.exec { "sh", "-c", "echo would rotate 3 log files", check = true }
    return { summary = r.stdout:gsub("%s+$", "") }
  end),

  o.approve("apply_gate", {
    message = "Rotate the logs now?",
    timeout = "8h", on_timeout = "reject",  -- nobody answered by morning: do nothing
  }),

  o.node("apply", function(ctx)
    ctx.log(("approved by %s: %s"):format(ctx.outputs.apply_gate.by, ctx.outputs.plan.summary))
    return { applied = true, approved_by = ctx.outputs.apply_gate.by }
  end),
}
