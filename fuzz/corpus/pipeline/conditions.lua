-- Conditions: `when` picks one of two branches, `switch` routes by a value, and `skip_if`
-- skips a node. Try: orchrun examples/conditions.lua --input '{"severity":"critical"}'
local o = require "orch"

return o.pipeline "conditions-demo" {
  o.node("classify", function(ctx, input)
    return { severity = input.severity or "warning", load = 0.4 }
  end),

  o.when("busy", function(ctx) return ctx.outputs.classify.load > 0.8 end,
    o.node("shed_load", function() return { action = "shed" } end),
    o.node("carry_on", function() return { action = "none" } end)),

  o.switch("route", function(ctx) return ctx.outputs.classify.severity end, {
    critical = o.node("page", function() return { notified = "on-call" } end),
    warning  = o.node("ticket", function() return { notified = "queue" } end),
    default  = o.node("note", function() return { notified = "log" } end),
  }),

  o.node("audit", function(ctx)
    return { routed = ctx.outputs.route.notified }
  end, { skip_if = function(ctx, input) return ctx.input.no_audit == true end }),
}
