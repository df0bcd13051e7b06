-- Shell commands: argv form (no shell, no quoting problems), shell-string form, stdin, env,
-- cwd, a timeout that kills the whole process group, and check = true to fail on non-zero.
local o = require "orch"

return o.pipeline "shell-demo" {
  o.node("uname", function()
    local r = o.exec { "uname", "-sr", check = true }
    return { kernel = r.stdout:gsub("%s+$", "") }
  end),

  o.node("pipeline", function()
    -- A shell string runs under /bin/sh -c.
    local r = o.exec "printf 'b\\na\\nc\\n' | sort | head -n 2"
    return { first_two = r.stdout, code = r.code }
  end),

  o.node("stdin_env", function()
    local r = o.exec { "sh", "-c", 'tr a-z A-Z; echo "$GREETING"',
                       stdin = "shouting\n", env = { GREETING = "hi from env" }, cwd = "/tmp" }
    return { out = r.stdout }
  end),

  o.node("bounded", function()
    -- The shell and the sleep it starts are one process group; the timeout kills both.
    local r = o.exec { sh = "sleep 30 & sleep 30; echo never", timeout = "300ms", kill_grace = "100ms" }
    return { timed_out = r.timed_out, signal = r.signal, took_ms = r.duration_ms }
  end),

  o.node("big_output", function()
    -- Large outputs keep a head and a tail excerpt.
    local r = o.exec { "seq", "1", "200000", max_output = 4096 }
    return { bytes = r.stdout_bytes, truncated = r.truncated, excerpt_len = #r.stdout }
  end),
}
