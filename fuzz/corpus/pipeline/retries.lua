-- Retries around a flaky step: it fails twice, then succeeds on the third attempt. Every
-- attempt is recorded (orchrun inspect RUN shows them). When retries run out, a fallback
-- can supply the output instead, and an optional node's failure does not fail the run.
local o = require "orch"

return o.pipeline "retries-demo" {
  o.node("flaky", function(ctx)
    if ctx.attempt < 3 then
      error(("upstream unavailable (attempt %d)"):format(ctx.attempt))
    end
    return { attempts_needed = ctx.attempt }
  end, { retry = { max = 5, backoff = "exponential", base = "50ms", cap = "1s" } }),

  o.node("always_down", function()
    o.fail("service is gone", { retryable = true })
  end, {
    retry = { max = 2, base = "10ms" },
    fallback = function(ctx, input, err)
      return { source = "cache", reason = err.message }
    end,
  }),

  o.node("nice_to_have", function()
    o.fail("metrics endpoint refused", { retryable = false })
  end, { optional = true }),

  o.node("slow", function()
    o.sleep("5s")
    return {}
  end, { timeout = "200ms", optional = true }),

  o.node("done", function(ctx)
    return { flaky = ctx.outputs.flaky.attempts_needed, cached = ctx.outputs.always_down.source }
  end),
}
