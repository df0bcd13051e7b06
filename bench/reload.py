#!/usr/bin/env python3
"""Hot reload delay: from the write of a pipeline file to the new version being served.

Starts `orchrun serve` on a temporary directory, then N times rewrites the pipeline file
(alternately in place and by rename, as editors do) and polls GET /api/pipelines/NAME over one
kept-alive connection until it reports the next version. Prints the median, min and max.
    bench/reload.py [ORCHRUN_BINARY] [N]
"""
import http.client, json, os, re, statistics, subprocess, sys, tempfile, time

binary = sys.argv[1] if len(sys.argv) > 1 else "build-bench/orchrun"
n = int(sys.argv[2]) if len(sys.argv) > 2 else 20
tmp = tempfile.mkdtemp()
pdir = os.path.join(tmp, "p")
os.mkdir(pdir)
path = os.path.join(pdir, "reload.lua")

def source(i):
    return ('local o = require "orch"\n-- revision %d\nreturn o.pipeline "reload" {\n'
            '  o.node("a", function() return { rev = %d } end),\n}\n' % (i, i))

with open(path, "w") as f:
    f.write(source(0))
log = open(os.path.join(tmp, "serve.log"), "w+")
proc = subprocess.Popen([binary, "serve", pdir, "--listen", "127.0.0.1:0", "--db",
                         os.path.join(tmp, "db")], stderr=log)
port = None
for _ in range(200):
    log.seek(0)
    m = re.search(r"listening on http://127.0.0.1:(\d+)", log.read())
    if m:
        port = int(m.group(1))
        break
    time.sleep(0.05)
if not port:
    proc.kill()
    sys.exit("serve did not start")
conn = http.client.HTTPConnection("127.0.0.1", port)

def version():
    conn.request("GET", "/api/pipelines/reload")
    return json.loads(conn.getresponse().read())["version"]

delays = []
v = version()
for i in range(1, n + 1):
    t0 = time.perf_counter()
    if i % 2:
        with open(path, "w") as f:
            f.write(source(i))
    else:
        with open(path + ".tmp", "w") as f:
            f.write(source(i))
        os.rename(path + ".tmp", path)
    while True:
        nv = version()
        if nv > v:
            break
        if time.perf_counter() - t0 > 5:
            sys.exit("no new version after 5 s")
    delays.append((time.perf_counter() - t0) * 1000)
    v = nv
    time.sleep(0.05)
proc.terminate()
proc.wait()
print("hot reload, write -> new version served: median %.1f ms (min %.1f, max %.1f; %d writes)"
      % (statistics.median(delays), min(delays), max(delays), n))
