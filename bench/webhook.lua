-- wrk script for bench/webhook.sh: POSTs one signed Alertmanager-like body.
wrk.method = "POST"
wrk.body = os.getenv("BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Hub-Signature-256"] = "sha256=" .. os.getenv("SIG")
local codes = {}
function response(status, headers, body)
  codes[status] = (codes[status] or 0) + 1
end
function done(summary, latency, requests)
  local s = ""
  for k, v in pairs(codes) do s = s .. k .. ":" .. v .. " " end
  io.write("status codes (last thread): " .. s .. "\n")
end
