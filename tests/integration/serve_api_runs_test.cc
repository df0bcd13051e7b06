// orchrun serve end to end: the real binary as a child process on 127.0.0.1:0 with a temporary
// database, driven by real HTTP clients (tests/serve_util.h), checked through the API and in
// the store. The runs API (server/api_runs.cc): listing with cursors and filters, CSV,
// cancel and retry.
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

// --- 2. listing runs --------------------------------------------------------------------------

TEST_CASE("serve: GET /api/runs pages with a cursor while runs are being added, and filters",
          "[serve]") {
  TempDir tmp;
  std::string dir = pipeline_dir(tmp, {{"x.lua", kTrivial}});
  std::string db = tmp.file("s.db");
  ServeProcess srv(dir, db);
  auto start = [&](int i) {
    auto r = srv.post("/api/pipelines/x/runs", R"({"input":{"i":)" + std::to_string(i) + "}}");
    INFO(show(r));
    REQUIRE(r.status == 202);
    return r.json_body()["run_id"].get<std::string>();
  };
  std::set<std::string> existing;
  for (int i = 0; i < 30; i++) existing.insert(start(i));
  REQUIRE(existing.size() == 30);

  // Page through, 7 at a time, adding two runs between pages.
  std::vector<json> seen;
  std::string cursor;
  int pages = 0, added = 0;
  for (;;) {
    std::string target = "/api/runs?limit=7";
    if (!cursor.empty()) target += "&cursor=" + url_encode(cursor);
    auto r = srv.get(target);
    INFO(target << " -> " << show(r));
    REQUIRE(r.status == 200);
    json j = r.json_body();
    REQUIRE(j["runs"].is_array());
    CHECK(j["runs"].size() <= 7);
    for (auto& x : j["runs"]) seen.push_back(x);
    pages++;
    start(1000 + added++);
    start(1000 + added++);
    if (j["next_cursor"].is_null()) break;
    cursor = j["next_cursor"];
    REQUIRE(pages < 20);
  }
  CHECK(pages == 5);
  std::set<std::string> ids;
  for (auto& x : seen) ids.insert(x["id"].get<std::string>());
  CHECK(ids.size() == seen.size());  // no duplicates
  CHECK(ids == existing);            // all that existed, and none of those added meanwhile
  // Newest first: (created_at, id) strictly decreasing, as in the store.
  for (size_t i = 1; i < seen.size(); i++) {
    auto a = std::make_pair(seen[i - 1]["created_at"].get<std::string>(),
                            seen[i - 1]["id"].get<std::string>());
    auto b =
        std::make_pair(seen[i]["created_at"].get<std::string>(), seen[i]["id"].get<std::string>());
    CHECK(a > b);
  }
  std::string in;
  for (auto& id : existing) in += (in.empty() ? "" : ",") + sql_literal(id);
  std::vector<std::string> store_order;
  for (auto& row :
       query(db, "select id from runs where id in (" + in + ") order by created_at desc, id desc"))
    store_order.push_back(row[0]);
  std::vector<std::string> api_order;
  for (auto& x : seen) api_order.push_back(x["id"]);
  CHECK(api_order == store_order);

  // Every run, in one page.
  REQUIRE(eventually(
      [&] { return count(db, "select count(*) from runs where status<>'succeeded'") == 0; }));
  auto all = srv.get("/api/runs?limit=1000").json_body();
  REQUIRE(all["runs"].size() == 40);
  CHECK(all["next_cursor"].is_null());
  CHECK(srv.get("/api/runs").json_body()["runs"].size() == 40);  // default limit 50

  // Bad parameters.
  auto bad = [&](const std::string& target, const std::string& code) {
    auto r = srv.get(target);
    INFO(target << " -> " << show(r));
    CHECK(r.status == 400);
    CHECK(r.error_code() == code);
  };
  bad("/api/runs?cursor=not-a-cursor!", "bad_cursor");
  bad("/api/runs?cursor=Zm9v", "bad_cursor");  // "foo"
  bad("/api/runs?cursor=", "bad_cursor");
  // Well-formed base64 of a created_at that does not fit in 64 bits.
  bad("/api/runs?cursor=OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OkFCQw", "bad_cursor");
  bad("/api/runs?limit=0", "bad_parameter");
  bad("/api/runs?limit=5000", "bad_parameter");
  bad("/api/runs?limit=-3", "bad_parameter");
  bad("/api/runs?limit=abc", "bad_parameter");
  bad("/api/runs?status=bogus", "bad_parameter");
  bad("/api/runs?since=yesterday", "bad_parameter");
  bad("/api/runs?since=2026-11-22T10:00:00", "bad_parameter");  // no zone
  bad("/api/runs?until=", "bad_parameter");
  CHECK(srv.get("/healthz").status == 200);
  CHECK(srv.get("/api/runs?limit=1000").status == 200);

  // Filters.
  auto n = [&](const std::string& params) {
    auto r = srv.get("/api/runs?limit=1000&" + params);
    INFO(params << " -> " << show(r));
    REQUIRE(r.status == 200);
    return static_cast<int64_t>(r.json_body()["runs"].size());
  };
  CHECK(n("status=succeeded") == 40);
  CHECK(n("status=failed") == 0);
  CHECK(n("pipeline=x") == 40);
  CHECK(n("pipeline=y") == 0);
  CHECK(n("source=api") == 40);
  CHECK(n("source=webhook") == 0);
  CHECK(n("since=1h") == 40);
  CHECK(n("until=1h") == 0);
  CHECK(n("since=2000-01-01T00:00:00Z") == 40);
  CHECK(n("until=2000-01-01T00:00:00Z") == 0);
  // At the created_at of the 11th newest run: since includes it, until excludes it.
  std::string pivot_id = all["runs"][10]["id"];
  int64_t pivot = count(db, "select created_at from runs where id=" + sql_literal(pivot_id));
  int64_t newer = count(db, "select count(*) from runs where created_at>=" + std::to_string(pivot));
  std::string iso = all["runs"][10]["created_at"];
  CHECK(n("since=" + url_encode(iso)) == newer);
  CHECK(n("until=" + url_encode(iso)) == 40 - newer);
  CHECK(n("since=" + std::to_string(pivot)) == newer);  // unix ms
  // The same instant with a UTC offset.
  std::string plus2 = iso8601_ms(pivot + 2 * 3600 * 1000);
  plus2 = plus2.substr(0, plus2.size() - 1) + "+02:00";
  CHECK(n("since=" + url_encode(plus2)) == newer);
  CHECK(n("since=1h&until=" + url_encode(iso) + "&status=succeeded&pipeline=x") == 40 - newer);

  // An idempotency key: the second start answers the first run.
  auto k1 = srv.post("/api/pipelines/x/runs", R"({"input":{},"idempotency_key":"nightly-1"})");
  REQUIRE(k1.status == 202);
  auto k2 = srv.post("/api/pipelines/x/runs", R"({"input":{},"idempotency_key":"nightly-1"})");
  CHECK(k2.status == 200);
  CHECK(k2.json_body()["existing"] == true);
  CHECK(k2.json_body()["run_id"] == k1.json_body()["run_id"]);
  CHECK(count(db, "select count(*) from runs where idempotency_key='nightly-1'") == 1);
  // The Idempotency-Key header works too, and a traceparent sets the trace id.
  std::string trace = "0af7651916cd43dd8448eb211c80319c";
  auto h1 = srv.request(
      "POST", "/api/pipelines/x/runs", "{}",
      {{"Idempotency-Key", "nightly-2"}, {"traceparent", "00-" + trace + "-b7ad6b7169203331-01"}});
  REQUIRE(h1.status == 202);
  CHECK(h1.json_body()["trace_id"] == trace);
  auto h2 = srv.request("POST", "/api/pipelines/x/runs", "{}", {{"Idempotency-Key", "nightly-2"}});
  CHECK(h2.status == 200);
  CHECK(h2.json_body()["run_id"] == h1.json_body()["run_id"]);
  CHECK(srv.stop() == 0);
}

// --- 3. CSV -----------------------------------------------------------------------------------

TEST_CASE("serve: GET /api/runs.csv is RFC 4180 CSV", "[serve]") {
  TempDir tmp;
  std::string dir = pipeline_dir(tmp, {{"x.lua", kTrivial}, {"f.lua", R"(local o = require "orch"
return o.pipeline "f" {
  o.node("boom", function(ctx) o.fail(ctx.input.msg) end),
}
)"}});
  std::string db = tmp.file("s.db");
  ServeProcess srv(dir, db);
  std::vector<std::string> ids;
  for (int i = 0; i < 3; i++) {
    auto r = srv.post("/api/pipelines/x/runs", "{}");
    REQUIRE(r.status == 202);
    ids.push_back(r.json_body()["run_id"]);
  }
  const std::string comma = R"(disk full, "sda1" at 99%)";
  const std::string lines = "first line\nsecond, \"line\"";
  for (const std::string& msg : {comma, lines}) {
    auto r = srv.post("/api/pipelines/f/runs", dump_json(json{{"input", {{"msg", msg}}}}));
    REQUIRE(r.status == 202);
    ids.push_back(r.json_body()["run_id"]);
  }
  for (auto& id : ids) srv.wait_run(id, "succeeded,failed");

  auto r = srv.get("/api/runs.csv");
  INFO(show(r));
  REQUIRE(r.status == 200);
  CHECK(r.header("content-type").rfind("text/csv", 0) == 0);
  CHECK(has(r.header("content-disposition"), "runs.csv"));
  const std::string header =
      "id,pipeline,version,status,source,created_at,started_at,finished_at,duration_ms,attempts,"
      "trace_id,error_type,error_node,error_message\r\n";
  CHECK(r.body.rfind(header, 0) == 0);
  CHECK(r.body.size() >= 2);
  CHECK(r.body.substr(r.body.size() - 2) == "\r\n");
  // The quote is doubled and the field quoted.
  CHECK(has(r.body, R"("disk full, ""sda1"" at 99%")"));
  CHECK(has(r.body, "\"first line\nsecond, \"\"line\"\"\""));
  auto rows = parse_csv(r.body);
  REQUIRE(rows.size() == 6);
  CHECK(rows[0].size() == 14);
  CHECK(static_cast<int64_t>(rows.size() - 1) == count(db, "select count(*) from runs"));
  std::map<std::string, std::vector<std::string>> by_id;
  for (size_t i = 1; i < rows.size(); i++) {
    INFO("row " << i);
    CHECK(rows[i].size() == 14);
    if (rows[i].size() == 14) by_id[rows[i][0]] = rows[i];
  }
  for (auto& row : query(db,
                         "select id, pipeline, version, status, source, attempts, trace_id, "
                         "error_type, error_node, error_message from runs")) {
    INFO("run " << row[0]);
    REQUIRE(by_id.count(row[0]) == 1);
    auto& c = by_id[row[0]];
    CHECK(c[1] == row[1]);
    CHECK(c[2] == row[2]);
    CHECK(c[3] == row[3]);
    CHECK(c[4] == row[4]);
    CHECK(c[9] == row[5]);
    CHECK(c[10] == row[6]);
    CHECK(c[11] == row[7]);
    CHECK(c[12] == row[8]);
    CHECK(c[13] == row[9]);
  }
  CHECK(by_id[ids[3]][13] == comma);
  CHECK(by_id[ids[4]][13] == lines);

  // Filters apply; limits too.
  auto failed = srv.get("/api/runs.csv?status=failed");
  REQUIRE(failed.status == 200);
  CHECK(parse_csv(failed.body).size() == 3);
  CHECK(srv.get("/api/runs.csv?limit=20000").status == 400);
  auto two = srv.get("/api/runs.csv?limit=2");
  CHECK(parse_csv(two.body).size() == 3);
  CHECK(two.header("x-truncated") == "true");
  CHECK(!two.header("x-next-cursor").empty());
  CHECK(srv.stop() == 0);
}

// --- 7. cancel and retry ----------------------------------------------------------------------

TEST_CASE("serve: GET /api/runs?stage= lists the runs in a stage, with their stage", "[serve]") {
  TempDir tmp;
  std::string dir = pipeline_dir(tmp, {{"staged.lua", R"(local o = require "orch"
return o.pipeline "staged" {
  o.node("ingest", function() return {} end, { stage = "ingested" }),
  o.node("analyze", function(ctx) if ctx.input.stop then error("stop") end return {} end,
         { stage = "analyzed" }),
}
)"}});
  std::string db = tmp.file("st.db");
  ServeProcess srv(dir, db);
  std::string ok = srv.post("/api/pipelines/staged/runs", "{}").json_body()["run_id"];
  std::string bad =
      srv.post("/api/pipelines/staged/runs", R"({"input":{"stop":true}})").json_body()["run_id"];
  srv.wait_run(ok, "succeeded");
  srv.wait_run(bad, "failed");
  auto r = srv.get("/api/runs?stage=analyzed");
  INFO(show(r));
  REQUIRE(r.status == 200);
  json runs = r.json_body()["runs"];
  REQUIRE(runs.size() == 2);
  for (auto& x : runs) CHECK(x.value("stage", "") == "analyzed");
  CHECK(srv.get("/api/runs?stage=ingested").json_body()["runs"].size() == 0);
  CHECK(srv.get("/api/runs/" + ok).json_body().value("stage", "") == "analyzed");
}

TEST_CASE("serve: a cancel through the API runs the pipeline's hooks first (202 cancelling)",
          "[serve]") {
  TempDir tmp;
  std::string dir = pipeline_dir(tmp, {{"hooked.lua", R"(local o = require "orch"
return o.pipeline "hooked" {
  o.node("a", function() o.sleep("30s") return {} end),
  finally = o.node("tidy", function(ctx) o.sleep("100ms") return { status = ctx.run.status } end),
}
)"}});
  std::string db = tmp.file("h.db");
  ServeProcess srv(dir, db);
  auto r = srv.post("/api/pipelines/hooked/runs", "{}");
  REQUIRE(r.status == 202);
  std::string id = r.json_body()["run_id"];
  REQUIRE(eventually([&] {
    return count(db, "select count(*) from node_runs where run_id=" + sql_literal(id) +
                         " and node_id='a' and status='running'") == 1;
  }));
  r = srv.post("/api/runs/" + id + "/cancel", R"({"reason":"maintenance"})");
  INFO(show(r));
  REQUIRE(r.status == 202);
  CHECK(r.json_body()["status"] == "cancelling");
  json run = srv.wait_run(id, "cancelled");
  CHECK(run.value("status", "") == "cancelled");
  CHECK(query_str(db,
                  "select status || '|' || output from node_runs where run_id=" + sql_literal(id) +
                      " and node_id='tidy'") == R"(succeeded|{"status":"cancelled"})");
  CHECK(query_str(db, "select error_message from runs where id=" + sql_literal(id)) ==
        "maintenance");
}

TEST_CASE("serve: cancel and retry through the API", "[serve]") {
  TempDir tmp;
  std::string dir = pipeline_dir(tmp, {{"sleepy.lua", kSleepy}});
  std::string db = tmp.file("s.db");
  ServeProcess srv(dir, db);
  auto r = srv.post("/api/pipelines/sleepy/runs", "{}");
  REQUIRE(r.status == 202);
  std::string id = r.json_body()["run_id"];
  REQUIRE(eventually([&] {
    return count(db, "select count(*) from node_runs where run_id=" + sql_literal(id) +
                         " and node_id='a' and status='running'") == 1;
  }));
  int64_t t0 = mono_ms();
  r = srv.post("/api/runs/" + id + "/cancel", R"({"reason":"maintenance window"})");
  INFO(show(r));
  REQUIRE(r.status == 200);
  CHECK(r.json_body()["status"] == "cancelled");
  REQUIRE(eventually([&] {
    return query_str(db, "select status from runs where id=" + sql_literal(id)) == "cancelled";
  }));
  CHECK(mono_ms() - t0 < 3000);  // not the 30 s sleep
  CHECK(query_str(db, "select error_message from runs where id=" + sql_literal(id)) ==
        "maintenance window");
  CHECK(query_str(db, "select status from node_runs where run_id=" + sql_literal(id) +
                          " and node_id='a'") == "cancelled");
  r = srv.post("/api/runs/" + id + "/cancel", "{}");
  CHECK(r.status == 409);
  CHECK(r.error_code() == "conflict");
  CHECK(srv.post("/api/runs/" + id + "/cancel", R"({"reason":5})").status == 400);

  // Retry: the cancelled node runs again (attempt 2, no sleep) and the run succeeds.
  r = srv.post("/api/runs/" + id + "/retry");
  INFO(show(r));
  REQUIRE(r.status == 202);
  CHECK(r.json_body()["run_attempt"] == 2);
  json run = srv.wait_run(id, "succeeded,failed,cancelled");
  CHECK(run["status"] == "succeeded");
  CHECK(run["attempts"] == 2);
  CHECK(query_str(db, "select status || '|' || attempts from runs where id=" + sql_literal(id)) ==
        "succeeded|2");
  CHECK(query_str(db,
                  "select group_concat(attempt || ':' || run_attempt || ':' || status, ' ') "
                  "from node_runs where run_id=" +
                      sql_literal(id) + " and node_id='a' order by seq") ==
        "1:1:cancelled 2:2:succeeded");
  CHECK(count(db, "select count(*) from events where run_id=" + sql_literal(id) +
                      " and kind='run.retried'") == 1);
  // Neither can be done to a succeeded run.
  CHECK(srv.post("/api/runs/" + id + "/retry").status == 409);
  CHECK(srv.post("/api/runs/" + id + "/cancel").status == 409);
  // Unknown ids.
  for (const char* t : {"/api/runs/NOSUCHRUN/cancel", "/api/runs/NOSUCHRUN/retry"}) {
    auto x = srv.post(t);
    CHECK(x.status == 404);
    CHECK(x.error_code() == "not_found");
  }
  CHECK(srv.get("/api/runs/NOSUCHRUN").status == 404);

  // A run owned by another orchrun process (a one-shot): the API records the request (202)
  // and the owner, which polls for it, cancels the run.
  std::string file = tmp.file("own.lua");
  write_file(file, R"(local o = require "orch"
return o.pipeline "own" { o.node("wait", function() o.sleep(30) return {} end) }
)");
  pid_t owner = spawn_quiet({orchrun_bin(), file, "--db", db});
  std::string owned;
  REQUIRE(eventually([&] {
    if (poll_int(db,
                 "select count(*) from node_runs n join runs r on r.id=n.run_id where "
                 "r.pipeline='own' and n.status='running'",
                 0) != 1)
      return false;
    owned = query_str(db, "select id from runs where pipeline='own'");
    return true;
  }));
  r = srv.post("/api/runs/" + owned + "/cancel", R"({"reason":"from the API"})");
  INFO(show(r));
  CHECK(r.status == 202);
  CHECK(r.json_body()["status"] == "cancel_requested");
  CHECK(r.json_body()["owner_pid"] == owner);
  int status = 0;
  bool gone = eventually([&] { return waitpid(owner, &status, WNOHANG) == owner; }, 5000);
  if (!gone) {
    kill(owner, SIGKILL);
    waitpid(owner, &status, 0);
  }
  REQUIRE(gone);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 1);
  CHECK(query_str(db, "select status || '|' || error_message from runs where id=" +
                          sql_literal(owned)) == "cancelled|from the API");
  CHECK(srv.stop() == 0);
}
