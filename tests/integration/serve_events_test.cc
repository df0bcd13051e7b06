// orchrun serve end to end: the real binary as a child process on 127.0.0.1:0 with a temporary
// database, driven by real HTTP clients (tests/serve_util.h), checked through the API and in
// the store. The event stream (server/api_events.cc, server/sse.cc).
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

// --- 5. server-sent events --------------------------------------------------------------------

TEST_CASE("serve: /api/events streams a run's events; Last-Event-ID resumes; orchrun logs",
          "[serve]") {
  TempDir tmp;
  std::string dir = pipeline_dir(tmp, {{"gate.lua", kGate}, {"sleepy.lua", kSleepy}});
  std::string db = tmp.file("s.db");
  ServeProcess srv(dir, db);
  auto r = srv.post("/api/pipelines/gate/runs", "{}");
  REQUIRE(r.status == 202);
  std::string id = r.json_body()["run_id"];
  REQUIRE(srv.wait_run(id, "awaiting_approval")["status"] == "awaiting_approval");
  auto store_ids = [&](int64_t after) {
    std::vector<int64_t> out;
    for (auto& row : query(db, "select id from events where run_id=" + sql_literal(id) +
                                   " and id>" + std::to_string(after) + " order by id"))
      out.push_back(std::stoll(row[0]));
    return out;
  };

  SseReader sse(srv.port(), "/api/events?run=" + id);
  REQUIRE(sse.status() == 200);
  CHECK(sse.header("content-type") == "text/event-stream");
  // What happened so far comes from the store...
  std::vector<SseReader::Event> got;
  REQUIRE(!store_ids(0).empty());
  int64_t stored_last = store_ids(0).back();
  while (got.empty() || got.back().id < stored_last) {
    auto e = sse.next(5000);
    REQUIRE(e);
    got.push_back(*e);
  }
  // ...then the rest live, after the approval.
  r = srv.post("/api/runs/" + id + "/approvals/deploy",
               R"({"decision":"approve","approver":"bob","comment":"go"})");
  INFO(show(r));
  REQUIRE(r.status == 200);
  auto rest = sse.until("run.succeeded", 8000);
  got.insert(got.end(), rest.begin(), rest.end());
  REQUIRE(!got.empty());
  CHECK(got.back().event == "run.succeeded");
  std::vector<int64_t> ids;
  for (size_t i = 0; i < got.size(); i++) {
    INFO("event " << i << ": " << got[i].event << " " << got[i].data);
    ids.push_back(got[i].id);
    if (i > 0) CHECK(got[i].id > got[i - 1].id);
    json d = parse_json(got[i].data, nullptr);
    REQUIRE(d.is_object());
    CHECK(d["id"] == got[i].id);
    CHECK(d["kind"] == got[i].event);
    CHECK(d["run_id"] == id);
  }
  CHECK(ids == store_ids(0));
  std::vector<std::string> kinds;
  for (auto& e : got) kinds.push_back(e.event);
  CHECK(std::count(kinds.begin(), kinds.end(), "approval.decided") == 1);
  CHECK(std::count(kinds.begin(), kinds.end(), "run.started") == 1);

  // Reconnecting with Last-Event-ID: N gives exactly what came after N.
  int64_t n = ids[ids.size() / 2];
  {
    SseReader again(srv.port(), "/api/events?run=" + id, {{"Last-Event-ID", std::to_string(n)}});
    REQUIRE(again.status() == 200);
    std::vector<int64_t> after;
    for (auto& e : again.until("run.succeeded", 5000)) after.push_back(e.id);
    CHECK(after == store_ids(n));
    // Nothing more comes; the stream stays open.
    CHECK(!again.next(200));
    CHECK(!again.ended());
  }
  {
    SseReader param(srv.port(), "/api/events?run=" + id + "&last_event_id=" + std::to_string(n));
    std::vector<int64_t> after;
    for (auto& e : param.until("run.succeeded", 5000)) after.push_back(e.id);
    CHECK(after == store_ids(n));
  }
  CHECK(srv.get("/api/events?run=NOSUCHRUN").status == 404);
  CHECK(srv.request("GET", "/api/events", "", {{"Last-Event-ID", "abc"}}).status == 400);

  // A pipeline's stream starts from now: it sees a new run from its start.
  {
    SseReader live(srv.port(), "/api/events?pipeline=sleepy");
    REQUIRE(live.status() == 200);
    auto s = srv.post("/api/pipelines/sleepy/runs", R"({"input":{"sleep":0.05}})");
    REQUIRE(s.status == 202);
    auto evs = live.until("run.succeeded", 5000);
    REQUIRE(!evs.empty());
    CHECK(evs.front().event == "run.started");
    CHECK(evs.back().event == "run.succeeded");
    for (auto& e : evs) CHECK(has(e.data, s.json_body()["run_id"].get<std::string>()));
  }

  // orchrun logs --follow through the server, while a run sleeps.
  auto s = srv.post("/api/pipelines/sleepy/runs", R"({"input":{"sleep":1}})");
  REQUIRE(s.status == 202);
  std::string sleepy = s.json_body()["run_id"];
  auto logs = run_cmd({orchrun_bin(), "logs", sleepy, "--follow", "--server", srv.url()},
                      {"ORCHRUN_DB=" + tmp.file("absent.db"), "NO_COLOR=1"}, "", 20);
  INFO(logs.out << logs.err);
  CHECK(logs.exit_code == 0);
  CHECK(logs.seconds > 0.5);  // it waited for the run
  CHECK(has(logs.out, "run.started"));
  CHECK(has(logs.out, "node.succeeded"));
  CHECK(has(logs.out, "run.succeeded"));
  int64_t lines = std::count(logs.out.begin(), logs.out.end(), '\n');
  CHECK(lines == count(db, "select count(*) from events where run_id=" + sql_literal(sleepy)));
  CHECK(query_str(db, "select status from runs where id=" + sql_literal(sleepy)) == "succeeded");

  // orchrun logs from the store, for a finished run.
  auto stored = orchrun({"logs", id}, db);
  INFO(stored.out << stored.err);
  CHECK(stored.exit_code == 0);
  CHECK(has(stored.out, "approval.decided"));
  CHECK(has(stored.out, "run.succeeded"));
  CHECK(static_cast<int64_t>(std::count(stored.out.begin(), stored.out.end(), '\n')) ==
        static_cast<int64_t>(ids.size()));

  // SIGTERM with a stream and an idle keep-alive connection open: they are closed, and serve
  // exits at once.
  SseReader open_stream(srv.port(), "/api/events");
  REQUIRE(open_stream.status() == 200);
  HttpConnection idle(srv.port());
  REQUIRE(idle.request("GET", "/healthz").status == 200);
  CHECK(srv.stop() == 0);
  CHECK(srv.stop_seconds() < 2.0);
  CHECK(!open_stream.next(2000));
  CHECK(open_stream.ended());
}
