-- Benchmark: 2,000 process nodes, each running /bin/true, at most 2 at once (o.map with
-- max = 2). Compared in bench/run.sh with ninja -j2 running the same 2,000 commands.
local o = require "orch"
local items = {}
for i = 1, 2000 do items[i] = i end
return o.pipeline "bench-procs" {
  o.map("p", items, function(ctx, item)
    local r = o.exec { "/bin/true", check = true }
    return { code = r.code }
  end, { max = 2 }),
}
