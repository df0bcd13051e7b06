-- Benchmark: a run that stops in its second node while a flag file exists (so that it can be
-- interrupted), and finishes at once when resumed without the flag.
local o = require "orch"
return o.pipeline "bench-interruptible" {
  o.node("first", function() return { ok = true } end),
  o.node("second", function(ctx)
    if o.fs.read(ctx.input.flag) then o.sleep("60s") end
    return { ok = true }
  end),
  o.node("third", function(ctx) return { done = ctx.outputs.first.ok } end),
}
