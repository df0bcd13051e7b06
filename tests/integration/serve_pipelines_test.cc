// orchrun serve end to end: the real binary as a child process on 127.0.0.1:0 with a temporary
// database, driven by real HTTP clients (tests/serve_util.h), checked through the API and in
// the store. The pipelines API (server/api_pipelines.cc): validate.
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

// --- 12. validate -----------------------------------------------------------------------------

TEST_CASE("serve: POST /api/pipelines/NAME/validate checks a source without running it",
          "[serve]") {
  TempDir tmp;
  std::string dir =
      pipeline_dir(tmp, {{"x.lua", kTrivial}, {"other.lua", R"(local o = require "orch"
return o.pipeline "other" {
  triggers = { o.webhook { path = "/hooks/taken" } },
  o.node("n", function() return {} end),
}
)"}});
  std::string db = tmp.file("s.db");
  ServeProcess srv(dir, db);
  auto validate = [&](const std::string& name, const std::string& source) {
    return srv.request("POST", "/api/pipelines/" + name + "/validate", source,
                       {{"Content-Type", "text/x-lua"}});
  };
  auto defs = count(db, "select count(*) from definitions");

  auto r = validate("x", R"(local o = require "orch"
return o.pipeline "x" {
  triggers = { o.schedule "30 2 * * *", o.webhook { path = "/hooks/x", secret = "X" } },
  o.node("a", function() return {} end),
  o.node("b", function() return {} end),
}
)");
  INFO(show(r));
  REQUIRE(r.status == 200);
  json j = r.json_body();
  CHECK(j["valid"] == true);
  CHECK(j["name"] == "x");
  CHECK(j["nodes"] == 2);
  CHECK(j["triggers"].size() == 2);
  CHECK(j["triggers"][0]["type"] == "schedule");
  CHECK(j["triggers"][0]["cron"] == "30 2 * * *");

  // Each invalid source: 422, errors as file:line: message.
  struct Bad {
    std::string source;
    int line;
    std::vector<std::string> needles;
  };
  const std::string head = "local o = require \"orch\"\nreturn o.pipeline \"x\" {\n";
  for (const Bad& b : std::vector<Bad>{
           {head + "  o.node(\"a\", function( return {} end),\n}\n", 3, {}},
           {head + "  triggers = { o.schedule \"61 * * * *\" },\n  o.node(\"a\", function() "
                   "end),\n}\n",
            3,
            {"o.schedule", "61 * * * *", "minute: 61 is out of range"}},
           {head + "  triggers = { o.schedule { cron = \"0 25 * * *\" } },\n  o.node(\"a\", "
                   "function() end),\n}\n",
            3,
            {"o.schedule", "hour: 25 is out of range"}},
           {head + "  triggers = {\n    o.schedule { cron = \"*/5 * * * *\", tz = "
                   "\"Mars/Olympus_Mons\" },\n  },\n  o.node(\"a\", function() end),\n}\n",
            4,
            {"o.schedule", "unknown time zone 'Mars/Olympus_Mons'"}},
           {head + "  triggers = { o.schedule { cron = \"@daily\", missed = \"sometimes\" } },\n  "
                   "o.node(\"a\", function() end),\n}\n",
            3,
            {"missed"}},
           {head + "  triggers = { o.webhook { path = \"/hooks/x\", sekret = \"X\" } },\n  "
                   "o.node(\"a\", function() end),\n}\n",
            3,
            {"o.webhook", "unknown option 'sekret'"}},
           {head + "  triggers = { o.webhook { path = \"hooks/x\" } },\n  o.node(\"a\", function() "
                   "end),\n}\n",
            3,
            {"o.webhook", "path"}},
           {head + "  triggers = { o.webhook { path = \"/hooks/x\", input = \"headers\" } },\n  "
                   "o.node(\"a\", function() end),\n}\n",
            3,
            {"input"}},
       }) {
    r = validate("x", b.source);
    INFO(b.source << "\n-> " << show(r));
    CHECK(r.status == 422);
    j = r.json_body();
    CHECK(j["valid"] == false);
    REQUIRE(j["errors"].is_array());
    REQUIRE(!j["errors"].empty());
    json e = j["errors"][0];
    CHECK(has(e["file"].get<std::string>(), "x.lua"));
    CHECK(e["line"] == b.line);
    for (auto& n : b.needles) CHECK(has(e["message"].get<std::string>(), n));
  }
  // The server's own checks: reserved paths, a path another pipeline has.
  r = validate("x", head +
                        "  triggers = { o.webhook { path = \"/api/runs\" } },\n  o.node(\"a\", "
                        "function() end),\n}\n");
  CHECK(r.status == 422);
  CHECK(has(r.body, "reserved"));
  r = validate("x", head +
                        "  triggers = { o.webhook { path = \"/hooks/taken\" } },\n  o.node(\"a\", "
                        "function() end),\n}\n");
  CHECK(r.status == 422);
  CHECK(has(r.body, "already used by pipeline other"));
  // The owner of the path may keep it.
  r = validate("other", R"(local o = require "orch"
return o.pipeline "other" { triggers = { o.webhook { path = "/hooks/taken" } }, o.node("n", function() end) }
)");
  CHECK(r.status == 200);
  // No body: the pipeline's file.
  CHECK(srv.post("/api/pipelines/x/validate").status == 200);
  CHECK(srv.post("/api/pipelines/nope/validate").status == 404);
  // Nothing was stored or run.
  CHECK(count(db, "select count(*) from definitions") == defs);
  CHECK(count(db, "select count(*) from runs") == 0);
  CHECK(srv.stop() == 0);
}
