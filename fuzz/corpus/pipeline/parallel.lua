-- Parallel branches really overlap: two 300 ms sleeps and two `sleep 0.3` processes all run at
-- once, so the whole pipeline takes about 300 ms, not 1.2 s.
local o = require "orch"

return o.pipeline "parallel-demo" {
  description = "Four branches that wait at the same time",

  o.parallel("gather", {
    o.node("timer_a", function() o.sleep("300ms"); return { waited = "300ms" } end),
    o.node("timer_b", function() o.sleep(0.3); return { waited = 0.3 } end),
    o.node("proc_a", function() return o.exec { "sleep", "0.3" } end),
    o.node("proc_b", function() return o.exec "sleep 0.3 && echo done" end),
  }),

  o.node("report", function(ctx, gathered)
    -- A parallel step's output is a table of its branches' outputs, by id.
    return {
      branches = 4,
      proc_b_said = gathered.proc_b.stdout:gsub("%s+$", ""),
      first_exit_code = ctx.outputs.proc_a.code,
    }
  end),
}
