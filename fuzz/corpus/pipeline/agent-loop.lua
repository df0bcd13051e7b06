-- An agent loop: plan, then change -> test until the tests pass (at most 3 times), a review that
-- asks a person when the change is large, and a notification sent by a child run.
--   orchrun examples/agent-loop.lua                  # tests pass on the 2nd iteration
--   orchrun examples/agent-loop.lua --input '{"lines": 800}'
--       the review says needs_human_review: the run stops (exit 4) until someone approves:
--       orchrun approve RUN review --as alice; orchrun resume RUN
local o = require "orch"

return o.pipeline "agent-loop" {
  o.node("plan", function(ctx, input)
    return { task = input.task or "fix flaky retry test", lines = input.lines or 40 }
  end),

  -- fix#1/change, fix#1/test, fix#2/change, ... Each iteration gets the previous one's output.
  o.loop("fix", { max = 3 }, o.seq {
    o.node("change", function(ctx, input)
      return { attempt = ctx.iteration, lines = ctx.outputs.plan.lines }
    end),
    o.node("test", function(ctx, change)
      -- Stands in for running the test suite: the first attempt fails.
      if ctx.iteration < 2 then
        return o.verdict.retryable("tests_failed", { failed = 2, lines = change.lines })
      end
      return o.verdict.pass { failed = 0, lines = change.lines, iteration = ctx.iteration }
    end),
  }),

  -- Large changes go to a person (an escalation gate); small ones pass.
  o.node("review", function(ctx, result)
    if result.lines > 500 then
      return o.verdict.needs_human_review("large_change", { lines = result.lines })
    end
    return o.verdict.pass { lines = result.lines, iterations = result.iteration }
  end, { escalate = { message = "Large change: please review before it ships" } }),

  o.call("announce", "notify", function(ctx)
    return { text = ("%s: tests pass after %d iteration(s)"):format(
      ctx.outputs.plan.task, ctx.outputs.fix.iteration) }
  end),
}
