-- HTTP from node bodies: o.http.get / o.http.post (o.http.request underneath) with a query,
-- headers, a JSON body and a timeout. A 404 or a 500 is a result (res.status, res.ok); only a
-- transfer that fails (refused, timeout, DNS, TLS, too large) returns nil, message, code.
-- Point it at any server on this machine:
--   orchrun examples/http.lua --input '{"url":"http://127.0.0.1:8080/"}'
-- Without a url only the first node runs (it needs no network).
local o = require "orch"

return o.pipeline "http-demo" {
  o.node("unreachable", function()
    -- Nothing listens on port 1 of the loopback: refused at once, and nothing raises.
    local res, err, code = o.http.get("http://127.0.0.1:1/", { timeout = "2s" })
    return { failed = res == nil, code = code or "none", message = err }
  end),

  o.when("has_url", function(ctx) return type(ctx.input.url) == "string" end,
    o.seq("call", {
      o.node("get", function(ctx)
        local res, err, code = o.http.get(ctx.input.url, {
          query = { q = "disk full", limit = 5 },
          headers = { Accept = "application/json" },
          timeout = "5s",
        })
        -- A failed transfer is worth retrying; a 4xx answer is not.
        if not res then o.fail(("GET failed (%s): %s"):format(code, err), { retryable = true }) end
        if res.status >= 400 and res.status < 500 then
          o.fail(("GET answered %d"):format(res.status), { retryable = false, type = "http_4xx" })
        end
        return { status = res.status, content_type = res.headers["content-type"],
                 bytes = #res.body, took_ms = res.duration_ms }
      end, { retry = { max = 3, base = "200ms" } }),

      o.node("post", function(ctx, input)
        -- `json` encodes the table and sets Content-Type: application/json.
        local res, err, code = o.http.post(ctx.input.url, {
          json = { event = "demo", run = ctx.run_id, previous_status = input.status },
          timeout = "5s",
        })
        if not res then o.fail(("POST failed (%s): %s"):format(code, err), { retryable = true }) end
        -- res.json is the decoded body when the server answered with JSON.
        return { status = res.status, answer = res.json or res.body }
      end),
    })),
}
