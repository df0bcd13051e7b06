-- Benchmark: a chain of trivial nodes (default 10,000; ORCH_BENCH_NODES is not readable from
-- the sandbox, so the size is fixed here and bench/run.sh generates other sizes).
local o = require "orch"
local steps = {}
for i = 1, 10000 do
  steps[i] = o.node("n" .. i, function(ctx, input) return { i = i } end)
end
steps.description = "10,000 trivial nodes in sequence"
return o.pipeline "bench-chain" (steps)
