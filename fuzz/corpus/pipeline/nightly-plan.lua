-- Nightly task plan: run each task of the plan (a shell command), keep its exit status, its
-- duration and an excerpt of its log (the last lines) as the task's output and the whole log
-- as an artifact; write a report; then stop at `awaiting_approval` until a person approves
-- (or rejects) publishing it.
--
--   orchrun pipelines/nightly-plan.lua                   # the built-in sample plan
--   orchrun pipelines/nightly-plan.lua --input '{"tasks":[{"name":"backup","run":"..."}]}'
--   orchrun serve pipelines/                             # every night at 02:30 UTC
--
-- Input (all optional): tasks = { {name=, run=, timeout=} ... }, excerpt_lines = 20.
-- A task that fails does not stop the others; the report says which failed.
local o = require "orch"

local SAMPLE = {
  { name = "disk", run = "df -P / | tail -1" },
  { name = "uptime", run = "uptime" },
  { name = "largest-logs", run = "ls -S /var/log 2>/dev/null | head -5" },
}

local function tasks_of(input)
  return type(input.tasks) == "table" and #input.tasks > 0 and input.tasks or SAMPLE
end

return o.pipeline "nightly-plan" {
  description = "Run the nightly tasks, keep their logs, and wait for a person to publish",
  triggers = { o.schedule { cron = "30 2 * * *", missed = "run_once" } },

  o.map("tasks", function(ctx, input) return tasks_of(input) end,
    o.node("task", function(ctx, task)
      local lines = tonumber(ctx.input.excerpt_lines) or 20
      local r = o.exec { sh = task.run, timeout = task.timeout or "10m" }
      local log = (r.stdout or "") .. (r.stderr or "")
      local file = ("%s/%s.log"):format(ctx.workspace, task.name)
      o.fs.write(file, log)
      ctx:artifact(task.name .. ".log", { kind = "log" })
      local excerpt = {}
      for line in log:gmatch("[^\n]+") do
        excerpt[#excerpt + 1] = line
        if #excerpt > lines then table.remove(excerpt, 1) end
      end
      return { name = task.name, exit_code = r.code, ok = r.ok,
               duration_ms = r.duration_ms, excerpt = excerpt }
    end), { max = 2 }),

  o.node("report", function(ctx)
    local out = { "# Nightly plan " .. ctx.run_id, "" }
    local failed = 0
    for _, t in ipairs(ctx.outputs.tasks) do
      if not t.ok then failed = failed + 1 end
      out[#out + 1] = ("## %s %s (exit %s, %d ms)"):format(t.ok and "✓" or "✗", t.name,
                                                          tostring(t.exit_code), t.duration_ms or 0)
      out[#out + 1] = "```"
      for _, l in ipairs(t.excerpt) do out[#out + 1] = l end
      out[#out + 1] = "```"
    end
    o.fs.write(ctx.workspace .. "/report.md", table.concat(out, "\n") .. "\n")
    ctx:artifact("report.md", { kind = "report" })
    return { tasks = #ctx.outputs.tasks, failed = failed }
  end),

  o.approve("publish", {
    message = "Publish the nightly report? (its task counts are in the output of 'report')",
    timeout = "12h", on_timeout = "reject",
  }),

  o.node("published", function(ctx)
    return { by = ctx.outputs.publish.by, report = ctx.artifacts["report.md"].path }
  end),
}
