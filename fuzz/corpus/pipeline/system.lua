-- Facts about this machine (o.context.system: /proc and statvfs, read off the loop; CPU busy
-- measured over a 100 ms interval by a timer while other nodes keep running) and a report
-- rendered with o.template.
local o = require "orch"

return o.pipeline "system-demo" {
  description = "System facts -> a short text report",

  o.parallel("gather", {
    o.node("facts", function()
      local f, err = o.context.system { "cpu", "memory", "disk", "load", "processes",
                                        interval = "100ms", paths = { "/" } }
      if not f then o.fail(err) end
      return f
    end),
    -- Runs while "facts" waits for its CPU sample: the interval does not hold the loop.
    o.node("meanwhile", function() o.sleep("20ms") return { slept_ms = 20 } end),
  }),

  o.node("report", function(ctx)
    local f = ctx.outputs.facts
    local text = o.template([[
{{hostname}}: cpu {{cpu.percent}}% of {{cpu.cores}} cores, load {{load.one}}/{{load.five}}/{{load.fifteen}}
memory {{memory.used_percent}}% used ({{memory.available_bytes}} bytes available)
disk {{disk[1].path}} {{disk[1].used_percent | default("?")}}% used, {{processes.total}} processes]], f)
    ctx.log(text)
    return { text = text, hot = f.cpu.percent > 90 or f.memory.used_percent > 90 }
  end),
}
