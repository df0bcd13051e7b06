// orchrun serve end to end: the real binary as a child process on 127.0.0.1:0 with a temporary
// database, driven by real HTTP clients (tests/serve_util.h), checked through the API and in
// the store. Graceful shutdown and resume (server/lifecycle.cc), also in-process.
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

// --- 9. graceful shutdown and resume ----------------------------------------------------------

TEST_CASE("serve: SIGTERM lets the running node finish, and the next start resumes the run",
          "[serve]") {
  TempDir tmp;
  std::string dir = pipeline_dir(tmp, {{"abc.lua", R"(local o = require "orch"
return o.pipeline "abc" {
  o.node("a", function() o.sleep(0.3) return { n = 1 } end),
  o.node("b", function() o.sleep(0.3) return { n = 2 } end),
  o.node("c", function(ctx) return { sum = ctx.outputs.a.n + ctx.outputs.b.n } end),
}
)"}});
  std::string db = tmp.file("s.db");
  std::string id;
  int port = 0;
  std::unique_ptr<BackgroundCmd> logs;
  {
    ServeProcess srv(dir, db, {"--grace", "5s"});
    port = srv.port();
    auto r = srv.post("/api/pipelines/abc/runs", "{}");
    REQUIRE(r.status == 202);
    id = r.json_body()["run_id"];
    // Someone follows the run through the server; they will ride over the restart.
    logs = std::make_unique<BackgroundCmd>(
        std::vector<std::string>{orchrun_bin(), "logs", id, "--follow", "--server", srv.url()},
        std::vector<std::string>{"ORCHRUN_DB=" + tmp.file("absent.db"), "NO_COLOR=1"},
        tmp.file("logs.out"));
    REQUIRE(eventually([&] {
      return count(db, "select count(*) from node_runs where run_id=" + sql_literal(id) +
                           " and node_id='a' and status='running'") == 1;
    }));
    int code = srv.stop(SIGTERM, 8000);
    INFO(srv.log());
    CHECK(code == 0);
    CHECK(srv.stop_seconds() < 3.0);  // a's 0.3 s, well within the grace
    CHECK(has(srv.log(), "shutting down"));
    CHECK(has(srv.log(), "1 run(s) left as they stand"));
  }
  CHECK(query_str(db, "select status from runs where id=" + sql_literal(id)) == "running");
  CHECK(query_str(
            db, "select group_concat(node_id || ':' || status, ' ') from node_runs where run_id=" +
                    sql_literal(id)) == "a:succeeded");

  // The same port, so that the follower finds the server again.
  ServeProcess again(dir, db, {"--grace", "5s"}, {}, "127.0.0.1:" + std::to_string(port));
  json run = again.wait_run(id, "succeeded,failed,cancelled");
  INFO(again.log());
  CHECK(run["status"] == "succeeded");
  CHECK(run["output"]["sum"] == 3);
  CHECK(has(again.log(), "resumed 1 unfinished run(s)"));
  for (const char* node : {"a", "b", "c"}) {
    INFO(node);
    CHECK(count(db, "select count(*) from node_runs where run_id=" + sql_literal(id) +
                        " and node_id=" + sql_literal(node) + " and status='succeeded'") == 1);
  }
  CHECK(count(db, "select count(*) from node_runs where run_id=" + sql_literal(id) +
                      " and node_id='a'") == 1);
  CHECK(count(db, "select count(*) from events where run_id=" + sql_literal(id) +
                      " and kind='run.resumed'") == 1);
  // The follower printed every event once and exited 0 with the run.
  int code = logs->wait(10000);
  INFO(logs->out() << logs->err());
  CHECK(code == 0);
  std::string out = logs->out();
  CHECK(static_cast<int64_t>(std::count(out.begin(), out.end(), '\n')) ==
        count(db, "select count(*) from events where run_id=" + sql_literal(id)));
  CHECK(has(out, "run.resumed"));
  CHECK(has(out, "run.succeeded"));
  CHECK(again.stop() == 0);
}

TEST_CASE(
    "serve: when the grace runs out, the attempt is interrupted and runs again on the "
    "run's version after the restart",
    "[serve]") {
  TempDir tmp;
  auto source = [](int v) {
    return R"(local o = require "orch"
return o.pipeline "long" {
  o.node("a", function(ctx)
    if ctx.attempt == 1 then o.exec { "sleep", "29.75" } end
    return { v = )" +
           std::to_string(v) + R"(, attempt = ctx.attempt }
  end),
  o.node("b", function(ctx) return { v = )" +
           std::to_string(v) + R"( } end),
}
)";
  };
  std::string dir = pipeline_dir(tmp, {{"long.lua", source(1)}});
  std::string db = tmp.file("s.db");
  auto sleeping = [] {
    return run_cmd({"pgrep", "-f", "^sleep 29.75$"}, {}, "", 10).exit_code == 0;
  };
  std::string id;
  {
    ServeProcess srv(dir, db, {"--grace", "1s"});
    HttpConnection open_before(srv.port());
    REQUIRE(open_before.request("GET", "/healthz").status == 200);
    auto r = srv.post("/api/pipelines/long/runs", "{}");
    REQUIRE(r.status == 202);
    id = r.json_body()["run_id"];
    REQUIRE(eventually(sleeping));
    srv.signal(SIGTERM);
    REQUIRE(eventually([&] { return has(srv.log(), "shutting down"); }, 3000, 2));
    // During the grace: no new connection; one that was open is told the server is going.
    CHECK(http_request(srv.port(), "GET", "/healthz", "", {}, 1000).status == 0);
    auto h = open_before.request("GET", "/healthz");
    INFO(show(h));
    CHECK(h.status == 503);
    CHECK(h.json_body()["status"] == "shutting_down");
    auto p = open_before.request("POST", "/api/pipelines/long/runs", "{}");
    INFO(show(p));
    CHECK(p.status == 503);
    CHECK(p.error_code() == "shutting_down");
    CHECK(srv.wait_exit(8000) == 0);
    INFO(srv.log());
    CHECK(srv.stop_seconds() >= 0.9);  // it gave the attempt its grace...
    CHECK(srv.stop_seconds() < 4.0);   // ...and no more
  }
  CHECK(eventually([&] { return !sleeping(); }, 3000));  // the process group was killed
  CHECK(query_str(db, "select status from runs where id=" + sql_literal(id)) == "running");
  CHECK(query_str(db,
                  "select group_concat(node_id || ':' || status, ' ') from node_runs where "
                  "run_id=" +
                      sql_literal(id)) == "a:running");

  // The file changes meanwhile: the run resumes on the version it started with.
  write_file(dir + "/long.lua", source(2));
  ServeProcess again(dir, db);
  json run = again.wait_run(id, "succeeded,failed,cancelled");
  CHECK(run["status"] == "succeeded");
  CHECK(run["version"] == 1);
  CHECK(run["output"] == json::parse(R"({"v":1})"));
  CHECK(query_str(
            db,
            "select group_concat(attempt || ':' || status || ':' || coalesce(error_type, ''), ' ') "
            "from node_runs where run_id=" +
                sql_literal(id) + " and node_id='a' order by seq") ==
        "1:failed:interrupted 2:succeeded:");
  CHECK(again.get("/api/pipelines/long").json_body()["version"] == 2);

  // A second SIGTERM does not wait for the grace (10 s here): the child processes are
  // killed and serve exits at once, 143.
  auto r = again.post("/api/pipelines/long/runs", "{}");
  REQUIRE(r.status == 202);
  REQUIRE(eventually(sleeping));
  again.signal(SIGTERM);
  REQUIRE(eventually([&] { return has(again.log(), "shutting down"); }, 3000, 2));
  again.signal(SIGTERM);
  CHECK(again.wait_exit(5000) == 143);
  CHECK(again.stop_seconds() < 3.0);
  CHECK(eventually([&] { return !sleeping(); }, 3000));
  CHECK(query_str(db, "select status from runs where id=" +
                          sql_literal(r.json_body()["run_id"].get<std::string>())) ==
        "running");  // resumed by the next start
}

// --- shutdown, in-process -------------------------------------------------------------------

TEST_CASE("serve: shutdown reaps the child processes of the runs it lets go (in-process)",
          "[serve]") {
  TempDir tmp;
  // A schedule (driven by the fake clock) starts a run whose node waits on a child process.
  std::string dir = pipeline_dir(tmp, {{"child.lua", R"(local o = require "orch"
return o.pipeline "child" {
  triggers = { o.schedule "*/5 * * * *" },
  o.node("wait", function() o.exec { "sleep", "29.25" } return {} end),
}
)"}});
  std::string db = tmp.file("p.db");
  std::string err;
  auto store = Store::open(db, StoreOptions{}, &err);
  REQUIRE(store);
  auto sleeping = [] {
    return run_cmd({"pgrep", "-f", "^sleep 29.25$"}, {}, "", 10).exit_code == 0;
  };
  {
    Loop loop;
    int64_t clock = utc_ms(2026, 3, 1, 1, 22, 0);
    ServeOptions so;
    so.dir = dir;
    so.port = 0;
    so.clock = [&clock] { return clock; };
    so.log = nullptr;
    so.grace_ms = 100;
    auto server = std::make_unique<Server>(&loop, store.get(), so);
    REQUIRE(server->start(&err));
    clock = utc_ms(2026, 3, 1, 1, 25, 10);
    server->check_schedules();
    REQUIRE(pump_until(loop, [&] { return server->scheduler().processes()->size() == 1; }));
    REQUIRE(pump_until(loop, sleeping));
    bool closed = false;
    size_t processes_at_done = 99;
    server->shutdown([&] {
      closed = true;
      processes_at_done = server->scheduler().processes()->size();
    });
    int64_t t0 = mono_ms();
    REQUIRE(pump_until(loop, [&] { return closed; }));
    // The grace (100 ms), then the kill: not the 2 s kill_grace of the detached process.
    CHECK(mono_ms() - t0 < 1500);
    // "done is called once everything is closed": the child was killed and reaped.
    CHECK(processes_at_done == 0);
    server.reset();
    auto leaked = loop.close();
    std::string names;
    for (auto& n : leaked) names += n + " ";
    INFO("handles left open: " << names);
    CHECK(leaked.empty());
  }
  CHECK(eventually([&] { return !sleeping(); }, 3000));
  CHECK(query_str(db, "select status from runs") == "running");  // left for the next start
}
