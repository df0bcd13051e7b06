-- Health check: collect system facts with commands and /proc, apply thresholds, write a report.
--
--   orchrun pipelines/health-check.lua
--   orchrun pipelines/health-check.lua --input '{"report":"/var/tmp/health.md","disk_warn":70}'
--
-- Input (all optional): report (path of the Markdown report, default reports/health-check.md),
-- disk_warn / disk_crit (percent used), mem_warn / mem_crit (percent used),
-- load_warn / load_crit (1-minute load per CPU), fail_on ("critical" | "warning" | "never").
-- The run fails (exit 1) when a check reaches the fail_on level, so cron or CI can alert on it.
local o = require "orch"

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

local function read_proc(path)
  local text, err = o.fs.read(path)
  if not text then o.fail(err, { retryable = false }) end
  return text
end

return o.pipeline "health-check" {
  description = "System facts -> thresholds -> report",
  tags = { "ops", "local" },
  defaults = { timeout = "20s", retry = { max = 2, base = "200ms" } },

  o.parallel("facts", {
    o.node("disk", function()
      -- POSIX output format: one line per filesystem, sizes in KiB.
      local r = o.exec { "df", "-P", "-k", "/", check = true }
      local line = r.stdout:match("\n([^\n]+)")
      local fs, size, used, avail, pct, mount =
        line:match("^(%S+)%s+(%d+)%s+(%d+)%s+(%d+)%s+(%d+)%%%s+(.+)$")
      if not pct then o.fail("cannot parse df output: " .. line, { retryable = false }) end
      return { filesystem = fs, mount = trim(mount), size_kb = tonumber(size),
               used_kb = tonumber(used), avail_kb = tonumber(avail), used_pct = tonumber(pct) }
    end),

    o.node("memory", function()
      local info = {}
      for k, v in read_proc("/proc/meminfo"):gmatch("(%w+):%s+(%d+)") do info[k] = tonumber(v) end
      local total, avail = info.MemTotal, info.MemAvailable or info.MemFree
      return { total_kb = total, available_kb = avail,
               used_pct = math.floor((total - avail) * 1000 / total + 0.5) / 10 }
    end),

    o.node("load", function()
      local l1, l5, l15 = read_proc("/proc/loadavg"):match("^(%S+)%s+(%S+)%s+(%S+)")
      local cpus = tonumber(trim(o.exec({ "nproc", check = true }).stdout))
      return { load1 = tonumber(l1), load5 = tonumber(l5), load15 = tonumber(l15), cpus = cpus,
               per_cpu = math.floor(tonumber(l1) / cpus * 100 + 0.5) / 100 }
    end),

    o.node("host", function()
      local uptime = tonumber(read_proc("/proc/uptime"):match("^(%S+)"))
      local kernel = trim(o.exec({ "uname", "-sr", check = true }).stdout)
      local name = trim(read_proc("/proc/sys/kernel/hostname"))
      local procs = o.exec { sh = "ls -d /proc/[0-9]* | wc -l" }
      return { hostname = name, kernel = kernel, uptime_s = math.floor(uptime),
               processes = tonumber(trim(procs.stdout)) }
    end),
  }),

  o.node("evaluate", function(ctx, facts)
    local i = ctx.input
    local function level(value, warn, crit)
      if value >= crit then return "critical" elseif value >= warn then return "warning" end
      return "ok"
    end
    local checks = {
      { name = "disk", value = facts.disk.used_pct, unit = "% used of " .. facts.disk.mount,
        status = level(facts.disk.used_pct, i.disk_warn or 85, i.disk_crit or 95) },
      { name = "memory", value = facts.memory.used_pct, unit = "% used",
        status = level(facts.memory.used_pct, i.mem_warn or 90, i.mem_crit or 97) },
      { name = "load", value = facts.load.per_cpu, unit = " per CPU (1 min)",
        status = level(facts.load.per_cpu, i.load_warn or 2, i.load_crit or 4) },
    }
    local worst = "ok"
    local rank = { ok = 0, warning = 1, critical = 2 }
    for _, c in ipairs(checks) do
      if rank[c.status] > rank[worst] then worst = c.status end
      if c.status ~= "ok" then ctx.log.warn(c.name .. " is " .. c.status, { value = c.value }) end
    end
    return { checks = checks, status = worst }
  end),

  o.node("report", function(ctx, verdict)
    local f = ctx.outputs
    local lines = {
      "# Health check: " .. f.host.hostname,
      "",
      ("Run `%s`, %s. Overall: **%s**."):format(ctx.run_id, os.date("!%Y-%m-%d %H:%M:%SZ"),
                                                verdict.status),
      "",
      "| check | value | status |",
      "|---|---|---|",
    }
    for _, c in ipairs(verdict.checks) do
      lines[#lines + 1] = ("| %s | %s%s | %s |"):format(c.name, c.value, c.unit, c.status)
    end
    lines[#lines + 1] = ""
    lines[#lines + 1] = ("Kernel %s, up %.1f days, %d processes, %d CPUs."):format(
      f.host.kernel, f.host.uptime_s / 86400, f.host.processes, f.load.cpus)
    local path = ctx.input.report or "reports/health-check.md"
    local bytes, err = o.fs.write(path, table.concat(lines, "\n") .. "\n", { mkdirs = true })
    if not bytes then o.fail(err, { retryable = false }) end
    ctx.log("report written to " .. path)
    return { path = path, bytes = bytes, status = verdict.status }
  end),

  o.node("verdict", function(ctx, report)
    local fail_on = ctx.input.fail_on or "critical"
    local s = report.status
    if (fail_on == "critical" and s == "critical")
       or (fail_on == "warning" and s ~= "ok") then
      o.fail(("system health is %s (see %s)"):format(s, report.path), { retryable = false })
    end
    return { status = s, report = report.path }
  end),
}
