-- o.secret: values come from $ORCHRUN_SECRET_<NAME> or a secrets file (--secrets FILE, mode
-- 0600), and are replaced by *** in everything orchrun stores or prints — outputs, logs,
-- errors, inspect, the live view. The pipeline itself sees the real value.
--
--   ORCHRUN_SECRET_DEMO_TOKEN=s3cret-value orchrun examples/secrets.lua
--   orchrun examples/secrets.lua          # runs too: the token is optional here
local o = require "orch"

return o.pipeline "secrets-demo" {
  description = "Use a token without leaking it",

  o.node("call", function(ctx)
    local token = o.secret("DEMO_TOKEN", { optional = true })
    if not token then
      ctx.log.warn("DEMO_TOKEN is not set; nothing to call")
      return { configured = false }
    end
    local header = "Authorization: Bearer " .. token
    ctx.log("would send " .. header)  -- stored as "Bearer ***"
    -- A child gets the secret only when it is passed explicitly.
    local r = o.exec { "sh", "-c", 'printf "%s" "${#TOKEN}"', env = { TOKEN = token },
                       check = true }
    return { configured = true, header = header, length_seen_by_child = tonumber(r.stdout) }
  end),
}
