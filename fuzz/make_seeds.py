#!/usr/bin/env python3
"""Writes the hand-made seeds of fuzz/corpus/ (run from the repository root). The corpus also
holds files copied from examples/, pipelines/, tests/fixtures/ and /usr/share/zoneinfo, and
inputs the fuzzers found (crash-*/finding-*): those are kept as they are."""
import os, shutil, glob

def put(target, name, data):
    d = os.path.join("fuzz", "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

# --- http_request: byte 0 = server (bits 0-1) and write size (bits 2-7), then the bytes sent.
H = "Host: x\r\n"
http = {
    "get": (0, "GET / HTTP/1.1\r\n" + H + "\r\n"),
    "get-query": (0, "GET /a%20b/%zz?q=%41+b&a=x&a=y HTTP/1.1\r\n" + H + "\r\n"),
    "post-length": (0, "POST /hooks/x HTTP/1.1\r\n" + H + "Content-Type: application/json\r\n"
                       "Content-Length: 9\r\n\r\n{\"a\": 1}\n"),
    "post-chunked": (0, "POST /api/runs?a=1 HTTP/1.1\r\n" + H + "Transfer-Encoding: chunked\r\n"
                        "\r\n5\r\n{\"a\":\r\n3;ext=1\r\n 1}\r\n0\r\nTrailer: t\r\n\r\n"),
    "chunked-split": (1 << 2, "POST / HTTP/1.1\r\n" + H + "Transfer-Encoding: chunked\r\n\r\n"
                              "a\r\n0123456789\r\n0\r\n\r\n"),
    "pipelined": (0, "GET /later HTTP/1.1\r\n" + H + "\r\nGET /stream HTTP/1.1\r\n" + H +
                     "\r\nGET /x HTTP/1.1\r\n" + H + "\r\n"),
    "pipelined-split": (3 << 2, "GET /later HTTP/1.1\r\n" + H + "\r\nDELETE /y HTTP/1.1\r\n" + H +
                                "\r\nGET /drop HTTP/1.1\r\n" + H + "\r\n"),
    "expect-continue": (0, "PUT /p HTTP/1.1\r\n" + H + "Expect: 100-continue\r\n"
                           "Content-Length: 4\r\n\r\nbody"),
    "head": (0, "HEAD /big HTTP/1.1\r\n" + H + "\r\nGET /big HTTP/1.1\r\n" + H + "\r\n"),
    "http10": (0, "GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /y HTTP/1.0\r\n\r\n"),
    "close": (0, "GET /x HTTP/1.1\r\nConnection: close\r\n\r\nGET /never HTTP/1.1\r\n\r\n"),
    "body-too-large": (2, "POST / HTTP/1.1\r\n" + H + "Content-Length: 100\r\n\r\n" + "x" * 100),
    "chunks-too-large": (2, "POST / HTTP/1.1\r\n" + H + "Transfer-Encoding: chunked\r\n\r\n"
                            "40\r\n" + "y" * 64 + "\r\n1\r\nz\r\n0\r\n\r\n"),
    "headers-too-large": (1, "GET / HTTP/1.1\r\n" + H + "X-Long: " + "h" * 300 + "\r\n\r\n"),
    "throw": (0, "GET /throw HTTP/1.1\r\n" + H + "\r\n"),
    "upgrade": (0, "GET /ws HTTP/1.1\r\n" + H + "Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
    "connect": (0, "CONNECT example.com:443 HTTP/1.1\r\n" + H + "\r\n"),
    "http2": (0, "GET / HTTP/2.0\r\n" + H + "\r\n"),
    "garbage": (0, "GARBAGE\r\n\r\n"),
    "folded-header": (0, "GET / HTTP/1.1\r\nX-A: one\r\n two\r\n" + H + "\r\n"),
    "header-crlf-echo": (0, "GET /%0d%0aSet-Cookie:x HTTP/1.1\r\n" + H + "\r\n"),
    "partial": (0, "POST / HTTP/1.1\r\n" + H + "Content-Length: 10\r\n\r\nabc"),
}
for name, (mode, text) in http.items():
    put("http_request", name, bytes([mode]) + text.encode())

# --- json
json_seeds = {
    "values": '{"a":[1,2.5,-0.0,1e300,9007199254740993,18446744073709551615,'
              '-9223372036854775808,"\\u00e9\\ud83d\\ude00\\n",null,true,false,{},[]],"":{"k":"v"}}',
    "bigint": "123456789012345678901234567890",
    "string": '"tab\\t quote\\" slash\\/ \\u0000"',
    "empty-array": "[]",
    "empty-object": "{}",
    "nested": "[[[[{\"a\":[[{}]]}]]]]",
    "number": "-12.5e-3",
    "dup-keys": '{"a":1,"a":2}',
    "spaces": ' \n\t[ 1 , 2 ]\r\n',
    "bad": '{"a":}',
}
for name, text in json_seeds.items():
    put("json", name, text)
for f in glob.glob("tests/fixtures/*.json"):
    shutil.copy(f, os.path.join("fuzz", "corpus", "json", os.path.basename(f)))

# --- cron: "<expr>\n<zone>\n<start ms>"
cron = {
    "quarter": "*/15 * * * *\nEurope/Paris\n1711846800000",
    "dst-gap": "30 2 * * *\nAmerica/New_York\n1710050000000",
    "daily": "@daily\nUTC\n",
    "leap": "0 0 29 2 *\nAustralia/Lord_Howe\n",
    "dublin": "30 1 * * sun-sat\nEurope/Dublin\n1698541200000",
    "never": "0 0 30 2 *\n\n",
    "lists": "5-10/2,30 1-23/3 1,15 jan-jun mon-fri\nPacific/Apia\n1325239200000",
    "sunday7": "0 12 * * 7\nAfrica/Casablanca\n",
    "dom-dow": "0 0 13 * fri\nAsia/Kathmandu\n-86400000",
    "range-wrap": "0 9 * * fri-sun\nAmerica/Sao_Paulo\n",
    "bad-field": "75 * * * *\nUTC\n",
    "bad-zone": "* * * * *\n../etc/passwd\n",
    "macro-extra": "@hourly 5\nUTC\n",
    "far": "0 0 1 1 *\nUTC\n94670856000000",
}
for name, text in cron.items():
    put("cron", name, text)

# --- tzif: real zone files of the system's tzdata, small to large.
os.makedirs("fuzz/corpus/tzif", exist_ok=True)
for z in ["UTC", "Asia/Kolkata", "Asia/Kathmandu", "Pacific/Apia", "Australia/Lord_Howe",
          "America/Sao_Paulo", "Africa/Casablanca", "Europe/Paris", "Europe/Dublin",
          "America/New_York"]:
    src = os.path.join("/usr/share/zoneinfo", z)
    if os.path.exists(src):
        shutil.copy(os.path.realpath(src), os.path.join("fuzz", "corpus", "tzif", z.replace("/", "_")))

# --- template: "<template>\0<data JSON>\0<missing mode>" (empty data: the target's default).
tpl = {
    "paths": "Alert {{alert.labels.severity}} on {{ alerts[1].labels.instance }} {{alerts.2.labels.instance}}",
    "last": "last: {{ alerts[-1].labels.instance }}",
    "filters": "{{ alert.annotations.summary | upper }} {{ alert.labels | json }} {{ alert.values | json }}",
    "defaults": '{{ nothing | default("n/a") }} {{ missing.deep | default(0) }} {{ n | default(true) }}',
    "pipe-in-string": '{{ alerts[5].labels.instance | default("n|a") | upper | trim }}',
    "literal": '{{ "{{" }} literal {{ \'x\' }}',
    "unclosed": "x {{ alert",
    "bad-path": "{{ a..b }} {{ ['odd.key'] }}",
    "values": "{{alert.values[2]}} {{alert.values[4]}} {{alert.values}} {{e}}",
    "multiline": "line one\n  {{ nope }}",
    "unknown-filter": "{{ alert | shout }}",
}
for name, text in tpl.items():
    put("template", name, text)
put("template", "data", "{{ a.b }} {{ c[1] }}\0{\"a\":{\"b\":1.5},\"c\":[\"x\"]}\0")
put("template", "empty-mode", "a{{x}}b\0{}\0empty")
put("template", "keep-mode", "a{{ x }}b\0[]\0keep")
put("template", "bad-mode", "a\0{}\0strict")

# --- json_pipeline: the shipped JSON definitions (the rest of its corpus is committed by hand:
# the error cases of tests/integration/json_pipeline_test.cc).
os.makedirs("fuzz/corpus/json_pipeline", exist_ok=True)
for f in sorted(glob.glob("examples/*.json")):
    shutil.copy(f, os.path.join("fuzz", "corpus", "json_pipeline", os.path.basename(f)))

# --- pipeline: every example and shipped pipeline, and small sources.
os.makedirs("fuzz/corpus/pipeline", exist_ok=True)
for f in sorted(glob.glob("examples/*.lua") + glob.glob("pipelines/*.lua")):
    shutil.copy(f, os.path.join("fuzz", "corpus", "pipeline", os.path.basename(f)))
lua = {
    "minimal": 'local o = require "orch"\nreturn o.pipeline "p" { o.node("a", function(ctx) return 1 end) }\n',
    "syntax-error": 'local o = require "orch"\nreturn o.pipeline "p" {\n',
    "not-a-table": "return 42\n",
    "loop": "while true do end\n",
    "dup": 'local o = require "orch"\nreturn o.pipeline "p" { o.node("a", function() end), o.node("a", function() end) }\n',
    "bytecode": "\x1bLJ\x02",
    "options": 'local o = require "orch"\nreturn o.pipeline "p" { timeout = "5s", retries = 2,\n'
               '  o.node("a", { timeout = "1s", retry = { max = 3, backoff = "100ms" } }, function() end),\n'
               '  o.when("w", function(ctx) return true end, o.node("b", function() end)),\n'
               '  o.map("m", function() return {1} end, o.node("i", function() end), { max = 2 }) }\n',
}
for name, text in lua.items():
    put("pipeline", name, text)

# --- secrets
sec = {
    "simple": "API_TOKEN=abc123\n",
    "comments": "# a comment\n\n  \t\nDB_PASSWORD = p=a=s=s\r\nX=\n",
    "bad-line": "A=1\nnot a line\n",
    "digit-name": "1A=x\n",
    "no-newline": "K=v",
    "spaces": "  KEY\t=  value with spaces  \n",
}
for name, text in sec.items():
    put("secrets", name, text)
