-- Benchmark: 100,000 parallel branches, each sleeping 100 ms.
local o = require "orch"
local branches = {}
for i = 1, 100000 do
  branches[i] = o.node("b" .. i, function() o.sleep("100ms") return {} end)
end
return o.pipeline "bench-wide" { o.parallel("fan", branches) }
