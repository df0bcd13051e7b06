// orchrun serve end to end: the real binary as a child process on 127.0.0.1:0 with a temporary
// database, driven by real HTTP clients (tests/serve_util.h), checked through the API and in
// the store. Prometheus metrics (server/metrics.cc, server/api_meta.cc).
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <map>
#include <regex>
#include <set>
#include <thread>

#include "base/ids.h"
#include "base/json_util.h"
#include "drivers/loop.h"
#include "serve_util.h"
#include "server/server.h"
#include "store/store.h"
#include "test_util.h"

using namespace orch;
using namespace orch::test;
using namespace orch::test::serve;

// --- 11. metrics ------------------------------------------------------------------------------

TEST_CASE("serve: /metrics is Prometheus text with runs, nodes, webhooks and reloads", "[serve]") {
  TempDir tmp;
  std::string dir = pipeline_dir(tmp, {{"m.lua", R"(local o = require "orch"
return o.pipeline "m" {
  triggers = { o.webhook { path = "/hooks/m", secret = "M", dedup_header = "X-Delivery" } },
  o.node("one", function() return {} end),
}
)"},
                                       {"failing.lua", kFailing},
                                       {"sleepy.lua", kSleepy}});
  std::string db = tmp.file("s.db");
  ServeProcess srv(dir, db, {"--grace", "1s"}, {"ORCHRUN_SECRET_M=m-secret"});
  std::vector<std::string> ids;
  for (int i = 0; i < 2; i++) {
    auto r = srv.post("/api/pipelines/m/runs", "{}");
    REQUIRE(r.status == 202);
    ids.push_back(r.json_body()["run_id"]);
  }
  auto deliver = [&](const std::string& body, const std::string& delivery, const std::string& key) {
    return srv.request("POST", "/hooks/m", body,
                       {{"X-Hub-Signature-256", "sha256=" + hmac_sha256_hex(key, body)},
                        {"X-Delivery", delivery}});
  };
  auto w1 = deliver(R"({"a":1})", "d1", "m-secret");
  REQUIRE(w1.status == 202);
  ids.push_back(w1.json_body()["run_id"]);
  auto w2 = deliver(R"({"a":2})", "d2", "m-secret");
  REQUIRE(w2.status == 202);
  ids.push_back(w2.json_body()["run_id"]);
  CHECK(deliver(R"({"a":1})", "d1", "m-secret").status == 200);  // duplicate
  CHECK(deliver(R"({"a":3})", "d3", "wrong").status == 401);     // bad signature
  auto f = srv.post("/api/pipelines/failing/runs", "{}");
  REQUIRE(f.status == 202);
  ids.push_back(f.json_body()["run_id"]);
  for (auto& id : ids) srv.wait_run(id, "succeeded,failed");
  auto sl = srv.post("/api/pipelines/sleepy/runs", "{}");  // stays in flight
  REQUIRE(sl.status == 202);
  // A reload and an invalid file.
  write_atomic(dir + "/m.lua", std::string(R"(local o = require "orch"
return o.pipeline "m" {
  triggers = { o.webhook { path = "/hooks/m", secret = "M", dedup_header = "X-Delivery" } },
  o.node("one", function() return { changed = true } end),
}
)"));
  write_file(dir + "/broken.lua", "return {");
  REQUIRE(eventually([&] {
    json p = srv.get("/api/pipelines/m").json_body();
    json b = srv.get("/api/pipelines/broken").json_body();
    return p.value("version", 0) == 2 && b.is_object() && b["error"].is_object();
  }));

  auto r = srv.get("/metrics");
  REQUIRE(r.status == 200);
  CHECK(r.header("content-type") == "text/plain; version=0.0.4; charset=utf-8");
  // Parse: every sample line is NAME{LABELS} VALUE or NAME VALUE, each series once, each
  // metric with a TYPE line before its samples.
  std::map<std::string, double> v;
  std::set<std::string> typed;
  static const std::regex kSample(
      R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (-?[0-9.eE+-]+|\+Inf|NaN)$)");
  std::string line;
  size_t pos = 0;
  const std::string& body = r.body;
  CHECK(!body.empty());
  CHECK(body.back() == '\n');
  while (pos < body.size()) {
    size_t nl = body.find('\n', pos);
    if (nl == std::string::npos) nl = body.size();
    line = body.substr(pos, nl - pos);
    pos = nl + 1;
    if (line.rfind("# TYPE ", 0) == 0) {
      std::string rest = line.substr(7);
      typed.insert(rest.substr(0, rest.find(' ')));
      continue;
    }
    if (line.rfind("# HELP ", 0) == 0) continue;
    std::smatch m;
    INFO("line: " << line);
    REQUIRE(std::regex_match(line, m, kSample));
    std::string name = m[1].str();
    std::string base = name;
    for (const char* suffix : {"_bucket", "_sum", "_count"})
      if (base.size() > strlen(suffix) &&
          base.compare(base.size() - strlen(suffix), strlen(suffix), suffix) == 0 &&
          typed.count(base.substr(0, base.size() - strlen(suffix))))
        base = base.substr(0, base.size() - strlen(suffix));
    CHECK(typed.count(base) == 1);
    std::string series = name + m[2].str();
    CHECK(v.count(series) == 0);
    v[series] = std::stod(m[3].str());
  }
  auto val = [&](const std::string& series) {
    INFO(series << "\n" << body);
    REQUIRE(v.count(series) == 1);
    return v[series];
  };
  CHECK(val(R"(orchrun_runs_started_total{pipeline="m",source="webhook"})") == 2);
  CHECK(val(R"(orchrun_runs_started_total{pipeline="m",source="api"})") == 2);
  CHECK(val(R"(orchrun_runs_started_total{pipeline="failing",source="api"})") == 1);
  CHECK(val(R"(orchrun_runs_finished_total{pipeline="m",status="succeeded"})") == 4);
  CHECK(val(R"(orchrun_runs_finished_total{pipeline="failing",status="failed"})") == 1);
  CHECK(val(R"(orchrun_node_attempts_total{pipeline="m",status="succeeded"})") == 4);
  CHECK(val(R"(orchrun_node_attempts_total{pipeline="failing",status="failed"})") == 1);
  CHECK(val(R"(orchrun_run_duration_seconds_bucket{pipeline="m",le="+Inf"})") == 4);
  CHECK(val(R"(orchrun_run_duration_seconds_count{pipeline="m"})") == 4);
  CHECK(val(R"(orchrun_run_duration_seconds_bucket{pipeline="m",le="10"})") == 4);
  // Buckets are cumulative.
  double prev = 0;
  for (const char* le : {"0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5",
                         "10", "30", "60", "300", "900", "3600", "+Inf"}) {
    double x =
        val(std::string(R"(orchrun_run_duration_seconds_bucket{pipeline="m",le=")") + le + "\"}");
    CHECK(x >= prev);
    prev = x;
  }
  CHECK(val(R"(orchrun_webhook_deliveries_total{pipeline="m",outcome="accepted"})") == 2);
  CHECK(val(R"(orchrun_webhook_deliveries_total{pipeline="m",outcome="duplicate"})") == 1);
  CHECK(val(R"(orchrun_webhook_deliveries_total{pipeline="m",outcome="bad_signature"})") == 1);
  CHECK(val(R"(orchrun_reloads_total{outcome="loaded"})") == 4);  // 3 at start, 1 change
  CHECK(val(R"(orchrun_reloads_total{outcome="invalid"})") == 1);
  CHECK(val("orchrun_runs_in_flight") == 1);
  CHECK(val(R"(orchrun_runs{status="running"})") == 1);
  CHECK(val(R"(orchrun_runs{status="succeeded"})") == 4);
  CHECK(val(R"(orchrun_pipelines{state="active"})") == 3);
  CHECK(val(R"(orchrun_pipelines{state="invalid"})") == 1);
  CHECK(val("process_start_time_seconds") > 1.7e9);

  auto h = srv.get("/healthz");
  REQUIRE(h.status == 200);
  json hj = h.json_body();
  CHECK(hj["status"] == "ok");
  CHECK(hj["pipelines"] == 3);
  CHECK(hj["pipelines_invalid"] == 1);
  CHECK(hj["runs_active"] == 1);
  // An invalid file's pipeline cannot be started.
  auto b = srv.post("/api/pipelines/broken/runs", "{}");
  CHECK(b.status == 409);
  CHECK(b.error_code() == "not_active");
  // Once the sleeping run is cancelled, nothing is in flight.
  REQUIRE(srv.post("/api/runs/" + sl.json_body()["run_id"].get<std::string>() + "/cancel").status ==
          200);
  REQUIRE(
      eventually([&] { return has(srv.get("/metrics").body, "\norchrun_runs_in_flight 0\n"); }));
  CHECK(has(srv.get("/metrics").body,
            "orchrun_runs_finished_total{pipeline=\"sleepy\",status=\"cancelled\"} 1\n"));
  CHECK(srv.stop() == 0);
}
