-- wrk script for bench/webhook.sh: POSTs one signed Alertmanager-like body.
wrk.method = "POST"
wrk.body = os.getenv("BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Hub-Signature-256"] = "sha256=" .. os.getenv("SIG")
-- Paced mode: each connection waits DELAY_MS between requests (Debian's wrk has no fixed-rate
-- mode; N connections with delay D give about N*1000/D requests/s when latency is small).
local pause = tonumber(os.getenv("DELAY_MS") or "")
if pause then
  function delay() return pause end
end
local codes = {}
function response(status, headers, body)
  codes[status] = (codes[status] or 0) + 1
end
function done(summary, latency, requests)
  local s = ""
  for k, v in pairs(codes) do s = s .. k .. ":" .. v .. " " end
  io.write("status codes (last thread): " .. s .. "\n")
end
