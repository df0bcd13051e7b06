-- Fan-out over a list known only at run time (o.map), a report kept as an artifact of the run,
-- and a later node that uses it.
--   orchrun examples/fanout.lua --input '{"hosts": ["web-1", "web-2", "db-1", "cache-1"]}'
local o = require "orch"

return o.pipeline "fanout" {
  description = "Check every host, at most two at a time, and keep the report",

  o.node("inventory", function(ctx, input)
    return { hosts = input.hosts or { "web-1", "web-2", "db-1" } }
  end),

  -- One instance per host: check[1], check[2], ... with the host as input. The list is recorded,
  -- so a resumed run checks the same hosts.
  o.map("check", function(ctx, input) return input.hosts end, function(ctx, host)
    o.sleep("20ms") -- stands in for a probe
    local ok = not host:find("^db")
    return { host = host, ok = ok, position = ctx.index }
  end, { max = 2, timeout = "5s" }),

  o.node("report", function(ctx, results)
    local lines, bad = { "# Host check", "" }, 0
    for _, r in ipairs(results) do
      lines[#lines + 1] = ("- %s: %s"):format(r.host, r.ok and "ok" or "NEEDS ATTENTION")
      if not r.ok then bad = bad + 1 end
    end
    o.fs.write(ctx.workspace .. "/report.md", table.concat(lines, "\n") .. "\n")
    local art = ctx:artifact("report.md", { kind = "report" })
    return { hosts = #results, attention = bad, report = art.path, sha256 = art.sha256 }
  end),

  o.node("publish", function(ctx)
    local report = ctx:use_artifact("report.md")
    local text = o.fs.read(report.path)
    ctx.log("report ready", { bytes = #text, sha256 = report.sha256 })
    return { published = report.name }
  end),
}
