-- Benchmark: 100 parallel nodes, each making `per_node` GET requests one after another to
-- input.url, so 100 requests are in flight at any time over kept-alive connections.
-- Driven by bench/http_bench (which starts the server); see bench/run.sh.
local o = require "orch"
local branches = {}
for i = 1, 100 do
  branches[i] = o.node("w" .. i, function(ctx)
    local url, n = ctx.input.url, ctx.input.per_node or 100
    for _ = 1, n do
      local res, err = o.http.request { url = url }
      if not res then error(err) end
      if res.status ~= 200 then error("status " .. res.status) end
    end
    return { requests = n }
  end)
end
return o.pipeline "bench-http" { o.parallel("fan", branches) }
