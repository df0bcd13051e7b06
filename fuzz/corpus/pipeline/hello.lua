-- The smallest useful pipeline: two nodes in sequence; the second reads the first's output.
local o = require "orch"

return o.pipeline "hello" {
  description = "Say hello, then shout it",

  o.node("greet", function(ctx, input)
    local name = input.name or "world"
    ctx.log("greeting " .. name)
    return { message = "hello, " .. name }
  end),

  o.node("shout", function(ctx, input)
    -- `input` is the previous node's output; ctx.outputs has every earlier node by id.
    return { message = input.message:upper(), from = ctx.outputs.greet.message }
  end),
}
