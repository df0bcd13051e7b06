// orchrun serve end to end: the real binary as a child process on 127.0.0.1:0 with a temporary
// database, driven by real HTTP clients (tests/serve_util.h), checked through the API and in
// the store. Hot reload of pipeline files (server/registry.cc, drivers/fs_watch.cc).
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

// --- 8. hot reload ----------------------------------------------------------------------------

namespace {

std::string hot_source(int v) {
  return R"(local o = require "orch"
return o.pipeline "hot" {
  o.node("a", function(ctx)
    if ctx.input.sleep then o.sleep(ctx.input.sleep) end
    return { v = )" +
         std::to_string(v) + R"( }
  end),
}
)";
}

}  // namespace

TEST_CASE("serve: pipeline files are reloaded when they change", "[serve]") {
  TempDir tmp;
  std::string dir = pipeline_dir(tmp, {{"hot.lua", hot_source(1)}});
  std::string file = dir + "/hot.lua";
  std::string db = tmp.file("s.db");
  ServeProcess srv(dir, db);
  auto pipeline = [&](const std::string& name) {
    return srv.get("/api/pipelines/" + name).json_body();
  };
  auto start = [&](const std::string& body) {
    auto r = srv.post("/api/pipelines/hot/runs", body);
    INFO(show(r));
    REQUIRE(r.status == 202);
    return r.json_body()["run_id"].get<std::string>();
  };
  // Polls GET /api/pipelines/NAME until cond holds; the delay since `since`, in ms.
  auto wait_for = [&](const std::string& name, int64_t since,
                      const std::function<bool(const json&)>& cond) -> int64_t {
    json last;
    bool ok = eventually(
        [&] {
          last = pipeline(name);
          return cond(last);
        },
        5000, 2);
    INFO(last.dump());
    REQUIRE(ok);
    return mono_ms() - since;
  };
  json p = pipeline("hot");
  REQUIRE(p["version"] == 1);
  CHECK(p["active"] == true);

  // (a, b) A run in flight on v1; a valid change (renamed into place) becomes v2.
  std::string r1 = start(R"({"input":{"sleep":1.0}})");
  REQUIRE(eventually([&] {
    return count(db, "select count(*) from node_runs where run_id=" + sql_literal(r1) +
                         " and status='running'") == 1;
  }));
  int64_t t = mono_ms();
  write_atomic(file, hot_source(2));
  int64_t d_rename = wait_for("hot", t, [](const json& j) { return j.value("version", 0) == 2; });
  std::printf("hot reload: valid change, renamed into place: served after %lld ms\n",
              static_cast<long long>(d_rename));
  CHECK(d_rename < 5000);
  p = pipeline("hot");
  CHECK(p["versions"].size() == 2);
  CHECK(p["error"].is_null());
  std::string r2 = start("{}");
  json run2 = srv.wait_run(r2, "succeeded,failed");
  CHECK(run2["version"] == 2);
  CHECK(run2["output"]["v"] == 2);
  json run1 = srv.wait_run(r1, "succeeded,failed");
  CHECK(run1["status"] == "succeeded");
  CHECK(run1["version"] == 1);
  CHECK(run1["output"]["v"] == 1);
  CHECK(query_str(db, "select version from runs where id=" + sql_literal(r1)) == "1");

  // (c) An invalid change (overwritten in place): v2 stays active, the error is shown and
  // stored.
  t = mono_ms();
  write_file(file,
             "local o = require \"orch\"\nreturn o.pipeline \"hot\" {\n  o.node(\"a\", function( "
             "return {} end),\n}\n");
  int64_t d_invalid = wait_for("hot", t, [](const json& j) { return j["error"].is_object(); });
  std::printf("hot reload: syntax error, overwritten in place: reported after %lld ms\n",
              static_cast<long long>(d_invalid));
  p = pipeline("hot");
  INFO(p.dump());
  CHECK(p["active"] == true);
  CHECK(p["version"] == 2);
  CHECK(has(p["error"]["message"].get<std::string>(), "hot.lua:3:"));
  CHECK(count(db, "select count(*) from pipeline_loads where outcome='invalid' and path=" +
                      sql_literal(file)) == 1);
  CHECK(
      has(query_str(db, "select error from pipeline_loads where outcome='invalid'"), "hot.lua:3:"));
  CHECK(srv.wait_run(start("{}"), "succeeded,failed")["version"] == 2);
  // Fixed again (the v2 source): the error is cleared, still v2.
  t = mono_ms();
  write_file(file, hot_source(2));
  int64_t d_fixed = wait_for("hot", t, [](const json& j) { return j["error"].is_null(); });
  std::printf("hot reload: fixed again: error cleared after %lld ms\n",
              static_cast<long long>(d_fixed));
  CHECK(pipeline("hot")["version"] == 2);
  CHECK(pipeline("hot")["versions"].size() == 2);

  // (d) The same content written again: nothing new.
  int64_t loads = count(db, "select count(*) from pipeline_loads");
  write_file(file, hot_source(2));
  write_atomic(file, hot_source(2));
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  CHECK(pipeline("hot")["versions"].size() == 2);
  CHECK(count(db, "select count(*) from definitions") == 2);
  CHECK(count(db, "select count(*) from pipeline_loads") == loads);

  // (e) Deleted: no new run; the one in flight finishes.
  std::string r3 = start(R"({"input":{"sleep":0.8}})");
  REQUIRE(eventually([&] {
    return count(db, "select count(*) from node_runs where run_id=" + sql_literal(r3) +
                         " and status='running'") == 1;
  }));
  t = mono_ms();
  REQUIRE(unlink(file.c_str()) == 0);
  int64_t d_removed = wait_for("hot", t, [](const json& j) { return j["active"] == false; });
  std::printf("hot reload: file deleted: deactivated after %lld ms\n",
              static_cast<long long>(d_removed));
  CHECK(pipeline("hot")["removed"] == true);
  auto refused = srv.post("/api/pipelines/hot/runs", "{}");
  INFO(show(refused));
  CHECK((refused.status == 404 || refused.status == 409));
  json run3 = srv.wait_run(r3, "succeeded,failed");
  CHECK(run3["status"] == "succeeded");
  CHECK(run3["version"] == 2);
  CHECK(count(db, "select count(*) from pipeline_loads where outcome='removed'") == 1);

  // (f) A new file: a new pipeline, served.
  t = mono_ms();
  write_atomic(dir + "/fresh.lua", R"(local o = require "orch"
return o.pipeline "fresh" { o.node("n", function() return { fresh = true } end) }
)");
  int64_t d_new = wait_for("fresh", t, [](const json& j) { return j.value("active", false); });
  std::printf("hot reload: new file: served after %lld ms\n", static_cast<long long>(d_new));
  auto fr = srv.post("/api/pipelines/fresh/runs", "{}");
  REQUIRE(fr.status == 202);
  CHECK(srv.wait_run(fr.json_body()["run_id"], "succeeded,failed")["output"]["fresh"] == true);
  // And the deleted one coming back is served again.
  write_file(file, hot_source(3));
  wait_for("hot", mono_ms(), [](const json& j) { return j.value("active", false); });
  CHECK(srv.wait_run(start("{}"), "succeeded,failed")["output"]["v"] == 3);
  CHECK(srv.stop() == 0);
}
