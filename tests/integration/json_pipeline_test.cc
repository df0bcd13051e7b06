// Pipelines written as JSON definitions (engine/json_pipeline.cc, stdlib/orch/jsondef.lua),
// through the real binary: a JSON pipeline runs exactly as the Lua written by hand for it (same
// steps, attempts, events, deliveries and outputs); its mistakes are said with the JSON path,
// line and column, and nothing runs; orchrun serve loads, runs, hot-reloads and validates them.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <regex>
#include <string>
#include <vector>

#include "base/json_util.h"
#include "http_test_server.h"
#include "serve_util.h"
#include "test_util.h"

using namespace orch;
using namespace orch::test;
using namespace orch::test::serve;

namespace {

std::string fixture(const std::string& name) {
  return source_dir() + "/tests/fixtures/" + name;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
  return s;
}

// Ingest -> system context -> local analysis -> a condition on the severity: a critical alert
// pages a webhook (which fails once, so the retry shows), anything else goes to the console;
// the branches rejoin at a transform of the analysis.
const char* kTriageJson = R"({
  "version": "1.0",
  "name": "triage",
  "defaults": {"timeout": "30s", "retry": {"max": 3, "base": "10ms"}},
  "nodes": [
    {"id": "ingest", "type": "ingest", "config": {"driver": "alertmanager"}, "next": "context"},
    {"id": "context", "type": "context", "config": {"include": ["memory", "disk"]},
     "next": "analyze"},
    {"id": "analyze", "type": "intelligence", "config": {"provider": "local"},
     "next": "critical"},
    {"id": "critical", "type": "condition",
     "config": {"when": {"path": "analyze.severity", "equals": "critical"},
                "then": "page", "else": "log"},
     "next": "done"},
    {"id": "page", "type": "notify", "config": {"driver": "webhook", "url": "URL"},
     "next": "done"},
    {"id": "log", "type": "notify", "config": {"driver": "console"}, "next": "done"},
    {"id": "done", "type": "transform",
     "config": {"source_node": "analyze",
                "mapping": {"severity": "severity", "summary": "summary",
                            "first_step": "recommendations[1]"}}}
  ]
}
)";

// The same pipeline, written by hand with the orch library.
const char* kTriageLua = R"(local o = require "orch"
return o.pipeline "triage" {
  defaults = { timeout = "30s", retry = { max = 3, base = "10ms" } },
  o.node("ingest", function(ctx) return { incidents = o.ingest.alertmanager(ctx.input) } end),
  o.node("context", function() return o.context.system { "memory", "disk" } end),
  o.node("analyze", function(ctx)
    return o.ai.rules(ctx.outputs.ingest.incidents, { system = ctx.outputs.context })
  end),
  o.when("critical", function(ctx) return ctx.outputs.analyze.severity == "critical" end,
    o.node("page", function(ctx)
      return o.notify.webhook { url = "URL", json = { incident = ctx.outputs.ingest.incidents[1],
                                                      analysis = ctx.outputs.analyze,
                                                      run_id = ctx.run_id } }
    end),
    o.node("log", function(ctx)
      return o.notify.console { incident = ctx.outputs.ingest.incidents[1],
                                analysis = ctx.outputs.analyze }
    end)),
  o.node("done", function(ctx)
    local a = ctx.outputs.analyze
    return { severity = a.severity, summary = a.summary, first_step = a.recommendations[1] }
  end),
}
)";

struct RunRecord {
  std::string status;
  std::vector<std::vector<std::string>> attempts;  // node, attempt, kind, status, error_type
  std::vector<std::vector<std::string>> events;    // kind, node, attempt
  json analyze, done;
};

RunRecord run_once(const std::string& file, const std::string& db, const std::string& input,
                   int want_exit) {
  auto r = orchrun({file, "--json", "--input", input}, db);
  INFO(file << "\n" << r.out << r.err);
  REQUIRE(r.exit_code == want_exit);
  std::string err;
  json sum = parse_json(r.out, &err);
  REQUIRE(!sum.is_discarded());
  std::string w = " where run_id=" + sql_literal(sum.at("run_id").get<std::string>());
  RunRecord rec;
  rec.status = sum.at("status").get<std::string>();
  rec.attempts = query(db,
                       "select node_id, attempt, kind, status, coalesce(error_type,'') from "
                       "node_runs" + w + " order by node_id, attempt");
  rec.events = query(db, "select kind, coalesce(node_id,''), coalesce(attempt,'') from events" +
                             w + " order by id");
  auto out = [&](const std::string& node) {
    std::string text = query_str(db, "select output from node_runs" + w + " and node_id=" +
                                         sql_literal(node) + " and status='succeeded'");
    return parse_json(text, &err);
  };
  rec.analyze = out("analyze");
  rec.done = out("done");
  return rec;
}

// `orchrun validate FILE`: its exit code and what it said.
CmdResult validate(const std::string& file) {
  return orchrun({"validate", file}, "");
}

}  // namespace

TEST_CASE("a JSON definition runs exactly as its Lua form: steps, attempts, events, deliveries",
          "[json]") {
  // The webhook refuses every first delivery of a run (500), so that the retry of the JSON
  // node's defaults is seen to apply as it does in Lua.
  std::atomic<int> n{0};
  HttpTestServer hook([&](const HttpTestRequest&) {
    return ++n % 2 == 1 ? HttpTestResponse::text(500, "not now")
                        : HttpTestResponse::json(200, R"({"ok":true})");
  });
  TempDir tmp;
  std::string url = hook.url("/page");
  std::string jfile = tmp.file("triage.json"), lfile = tmp.file("triage.lua");
  write_file(jfile, replace_all(kTriageJson, "\"URL\"", "\"" + url + "\""));
  write_file(lfile, replace_all(kTriageLua, "\"URL\"", "\"" + url + "\""));

  SECTION("a critical alert: the page branch, with a retry") {
    std::string input = "@" + fixture("alertmanager_v4.json");
    RunRecord j = run_once(jfile, tmp.file("j.db"), input, 0);
    RunRecord l = run_once(lfile, tmp.file("l.db"), input, 0);
    CHECK(j.status == "succeeded");
    CHECK(j.status == l.status);
    CHECK(j.attempts == l.attempts);
    CHECK(j.events == l.events);
    CHECK(j.analyze == l.analyze);
    CHECK(j.done == l.done);
    // What was run: the page (twice: refused once), not the console.
    std::vector<std::string> page2 = {"critical/page", "2", "body", "succeeded", ""};
    CHECK(std::count(j.attempts.begin(), j.attempts.end(), page2) == 1);
    CHECK(j.done.value("severity", "") == "critical");
    CHECK(!j.done.value("first_step", "").empty());
    // Both runs delivered the same body to the webhook (but for their run ids).
    REQUIRE(hook.wait_for_requests(4, 5000));
    auto reqs = hook.requests();
    auto body = [&](int i) {
      std::string err;
      json b = parse_json(reqs.at(i).body, &err);
      REQUIRE(b.is_object());
      CHECK(b["run_id"].is_string());
      b.erase("run_id");
      return b;
    };
    json b1 = body(1), b3 = body(3);
    // The incident's times are those of each store's first sighting.
    for (json* b : {&b1, &b3})
      for (const char* k : {"first_seen", "last_seen"}) (*b)["incident"].erase(k);
    CHECK(b1 == b3);
    CHECK(b1["incident"]["title"] == "NodeFilesystemAlmostOutOfSpace");
    CHECK(b1["analysis"]["severity"] == "critical");
  }
  SECTION("a warning: the else branch, the console") {
    std::string warning = tmp.file("warning.json");
    write_file(warning, replace_all(read_file(fixture("alertmanager_v4.json")), "critical",
                                    "warning"));
    std::string input = "@" + warning;
    RunRecord j = run_once(jfile, tmp.file("j.db"), input, 0);
    RunRecord l = run_once(lfile, tmp.file("l.db"), input, 0);
    INFO(j.done.dump());
    CHECK(j.done.value("severity", "") != "critical");
    CHECK(j.attempts == l.attempts);
    CHECK(j.events == l.events);
    CHECK(j.analyze == l.analyze);
    CHECK(j.done == l.done);
    std::vector<std::string> skipped = {"critical/page", "1", "body", "skipped", ""};
    CHECK(std::count(j.attempts.begin(), j.attempts.end(), skipped) == 1);
    CHECK(hook.request_count() == 0);
  }
  SECTION("a payload that is no alert fails the same step the same way") {
    RunRecord j = run_once(jfile, tmp.file("j.db"), R"({"hello":1})", 1);
    RunRecord l = run_once(lfile, tmp.file("l.db"), R"({"hello":1})", 1);
    CHECK(j.status == "failed");
    CHECK(j.attempts == l.attempts);
    CHECK(j.events == l.events);
  }
}

TEST_CASE("a JSON definition's mistakes name the JSON path, line and column; nothing runs",
          "[json]") {
  TempDir tmp;
  struct Case {
    const char* name;
    const char* text;
    std::vector<std::string> said;  // each must appear in stderr
  };
  const std::vector<Case> cases = {
      {"unknown-type",
       R"({"version": "1.0",
 "nodes": [
  {"id": "ingest", "type": "ingest", "config": {"driver": "alertmanager"}, "next": "analyze"},
  {"id": "analyze", "type": "inteligence", "config": {}}
 ]}
)",
       {"unknown-type.json:4:29: nodes[1].type: unknown node type \"inteligence\" (did you mean "
        "\"intelligence\"?)"}},
      {"missing-next",
       R"({"version": "1.0",
 "nodes": [
  {"id": "ingest", "type": "ingest", "config": {"driver": "alertmanager"}, "next": "analyse"},
  {"id": "analyze", "type": "intelligence"}
 ]}
)",
       {"missing-next.json:3:84: nodes[0].next: no node has the id \"analyse\" (did you mean "
        "\"analyze\"?)"}},
      {"cycle",
       R"({"version": "1.0",
 "nodes": [
  {"id": "a", "type": "transform", "next": "b"},
  {"id": "b", "type": "transform", "next": "c"},
  {"id": "c", "type": "transform", "next": "a"}
 ]}
)",
       {"cycle.json:3:3: nodes[0]: a cycle through next/then/else: a -> b -> c -> a"}},
      {"duplicate",
       R"({"version": "1.0",
 "nodes": [
  {"id": "a", "type": "transform", "next": "b"},
  {"id": "b", "type": "transform"},
  {"id": "a", "type": "transform"}
 ]}
)",
       {"duplicate.json:5:10: nodes[2].id: duplicate id \"a\" (first used by nodes[0])"}},
      {"provider",
       R"({"version": "1.0",
 "nodes": [
  {"id": "ingest", "type": "ingest", "config": {"driver": "alertmanager"}, "next": "context"},
  {"id": "context", "type": "context", "config": {"include": ["cpu", "gpu"]}, "next": "analyze"},
  {"id": "analyze", "type": "intelligence", "config": {"provider": "openia"}, "next": "notify"},
  {"id": "notify", "type": "notify", "config": {"driver": "slack", "chanel": "#x"}}
 ]}
)",
       {"provider.json:4:70: nodes[1].config.include[1]: unknown fact \"gpu\"",
        "provider.json:5:68: nodes[2].config.provider: unknown provider \"openia\" (did you mean "
        "\"openai\"?)",
        "provider.json:6:78: nodes[3].config.chanel: unknown field \"chanel\" (did you mean "
        "\"channel\"?) for the slack driver"}},
      {"syntax",
       R"({"version": "1.0",
 "nodes": [
  {"id": "a", "type": "transform" "next": "b"}
 ]}
)",
       {"syntax.json:3:", "invalid JSON: syntax error while parsing object - unexpected string literal"}},
      {"not-an-object", "[1, 2]\n",
       {"not-an-object.json:1:1: a JSON pipeline definition is an object"}},
      {"no-version", R"({"nodes": [{"id": "a", "type": "transform"}]})",
       {"no-version.json:1:1: \"version\" is required (\"1.0\")"}},
      {"unreached",
       R"({"version": "1.0",
 "nodes": [
  {"id": "a", "type": "transform"},
  {"id": "b", "type": "transform"}
 ]}
)",
       {"unreached.json:4:3: nodes[1]: node \"b\" is not reached from the first node (\"a\")"}},
      {"no-rejoin",
       R"({"version": "1.0",
 "nodes": [
  {"id": "c", "type": "condition",
   "config": {"when": "input.x", "then": "yes", "else": "no"}, "next": "end"},
  {"id": "yes", "type": "transform", "next": "end"},
  {"id": "no", "type": "transform"},
  {"id": "end", "type": "transform"}
 ]}
)",
       {"no-rejoin.json:4:57: nodes[0].config.else: the else branch (from \"no\" to \"no\") ends without reaching "
        "\"end\""}},
      {"bad-path",
       R"({"version": "1.0",
 "nodes": [
  {"id": "c", "type": "condition", "config": {"when": {"path": "inptu.x", "gt": "3"},
   "then": "t"}},
  {"id": "t", "type": "transform", "config": {"mapping": {"x": "a[0]"}}}
 ]}
)",
       {"bad-path.json:3:64: nodes[0].config.when.path: the path \"inptu.x\" starts with "
        "\"inptu\", which is no node id (nor input); did you mean \"input\"?",
        "bad-path.json:3:81: nodes[0].config.when.gt: must be a number, got a string",
        "bad-path.json:5:64: nodes[1].config.mapping.x: invalid path \"a[0]\""}},
      // Said by the pipeline compiler of the generated Lua, and still of the JSON.
      {"bad-trigger",
       R"({"version": "1.0",
 "triggers": [{"webhook": {"path": "/hooks/ok"}},
              {"cron": "61 * * * *"}],
 "nodes": [{"id": "a", "type": "transform"}]}
)",
       {"bad-trigger.json:3:15: triggers[1]: "}},
  };
  std::string db = tmp.file("none.db");
  for (const auto& c : cases) {
    std::string file = tmp.file(std::string(c.name) + ".json");
    write_file(file, c.text);
    INFO("case " << c.name);
    auto r = validate(file);
    INFO(r.err);
    CHECK(r.exit_code == 2);
    for (const auto& s : c.said) CHECK(r.err.find(s) != std::string::npos);
    // Nothing of it runs, and nothing is stored.
    auto run = orchrun({file, "--json"}, db);
    INFO(run.out << run.err);
    CHECK(run.exit_code == 2);
    CHECK(access(db.c_str(), F_OK) != 0);
  }
  // `validate --json` gives the column too.
  auto r = orchrun({"validate", "--json", tmp.file("missing-next.json")}, "");
  std::string err;
  json j = parse_json(r.out, &err);
  INFO(r.out << r.err);
  REQUIRE(j.is_array());
  REQUIRE(!j.at(0).at("errors").empty());
  CHECK(j[0]["errors"][0]["line"] == 3);
  CHECK(j[0]["errors"][0]["column"] == 84);
}

TEST_CASE("a JSON definition at its bounds: a long chain loads; too many nodes, conditions too "
          "deep and a long cycle are refused in one line", "[json]") {
  TempDir tmp;
  auto chain = [](int n, bool cycle) {
    json nodes = json::array();
    for (int i = 0; i < n; i++) {
      json x = {{"id", "n" + std::to_string(i)}, {"type", "transform"}};
      if (i + 1 < n || cycle) x["next"] = "n" + std::to_string((i + 1) % n);
      nodes.push_back(x);
    }
    return json{{"version", "1.0"}, {"name", "chain"}, {"nodes", nodes}}.dump();
  };
  auto nested = [](int n) {
    json nodes = json::array();
    for (int i = 0; i < n; i++)
      nodes.push_back({{"id", "c" + std::to_string(i)},
                       {"type", "condition"},
                       {"config", {{"when", "input.x"}, {"then", "c" + std::to_string(i + 1)}}}});
    nodes.push_back({{"id", "c" + std::to_string(n)}, {"type", "transform"}});
    return json{{"version", "1.0"}, {"name", "nested"}, {"nodes", nodes}}.dump();
  };
  auto check = [&](const std::string& name, const std::string& text) {
    std::string file = tmp.file(name + ".json");
    write_file(file, text);
    return validate(file);
  };
  auto r = check("long", chain(10000, false));
  INFO(r.err);
  CHECK(r.exit_code == 0);
  r = check("toolong", chain(10001, false));
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("nodes: has 10001 nodes; a JSON definition has at most 10000") !=
        std::string::npos);
  r = check("nested", nested(30));
  CHECK(r.exit_code == 0);
  r = check("deep", nested(5000));
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("conditions are nested more than 40 deep here") != std::string::npos);
  r = check("cycle", chain(5000, true));
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("a cycle through next/then/else: n0 -> n1 -> n2 -> n3 -> n4 -> (4991 more) "
                   "-> n4996 -> n4997 -> n4998 -> n4999 -> n0") != std::string::npos);
  CHECK(r.err.size() < 400);
}

TEST_CASE("serve: JSON definitions load, run from their webhook, hot-reload and validate",
          "[json]") {
  TempDir tmp;
  const std::string v1 = R"({"version": "1.0", "name": "triage",
 "triggers": [{"webhook": {"path": "/hooks/triage"}}],
 "nodes": [
  {"id": "ingest", "type": "ingest", "config": {"driver": "alertmanager"}, "next": "analyze"},
  {"id": "analyze", "type": "intelligence", "next": "log"},
  {"id": "log", "type": "notify", "config": {"driver": "console"}}
 ]}
)";
  std::string v2 = replace_all(
      v1, R"("config": {"driver": "console"}})",
      R"("config": {"driver": "console"}, "next": "short"},
  {"id": "short", "type": "transform", "config": {"source_node": "analyze", "mapping": {"s": "severity"}}})");
  std::string dir = pipeline_dir(tmp, {{"triage.json", v1}});
  std::string file = dir + "/triage.json";
  std::string db = tmp.file("s.db");
  ServeProcess srv(dir, db);
  auto pipeline = [&] { return srv.get("/api/pipelines/triage").json_body(); };
  auto wait_for = [&](const std::function<bool(const json&)>& cond) {
    json last;
    bool ok = eventually(
        [&] {
          last = pipeline();
          return cond(last);
        },
        8000, 10);
    INFO(last.dump());
    REQUIRE(ok);
    return last;
  };

  json p = pipeline();
  INFO(p.dump());
  REQUIRE(p.value("version", 0) == 1);
  CHECK(p.value("file", "") == file);
  CHECK(p["error"].is_null());
  // The stored source is the JSON itself.
  CHECK(query_str(db, "select source from definitions where name='triage' and version=1") == v1);

  // Its webhook starts a run that goes through every node.
  auto r = srv.post("/hooks/triage", read_file(fixture("alertmanager_v4.json")));
  INFO(show(r));
  REQUIRE(r.status == 202);
  std::string id = r.json_body()["run_id"];
  json run = srv.wait_run(id, "succeeded,failed");
  CHECK(run["status"] == "succeeded");
  CHECK(count(db, "select count(*) from node_runs where run_id=" + sql_literal(id) +
                      " and status='succeeded'") == 3);

  // A change is v2; a broken change keeps v2 serving and says where the JSON is wrong.
  write_atomic(file, v2);
  wait_for([](const json& j) { return j.value("version", 0) == 2; });
  id = srv.post("/api/pipelines/triage/runs",
                R"({"input":)" + read_file(fixture("alertmanager_v4.json")) + "}")
           .json_body()["run_id"];
  run = srv.wait_run(id, "succeeded,failed");
  CHECK(run["status"] == "succeeded");
  CHECK(run["output"]["s"] == "critical");
  write_atomic(file, replace_all(v2, R"("next": "short")", R"("next": "shrot")"));
  p = wait_for([](const json& j) { return j["error"].is_object(); });
  CHECK(p["version"] == 2);
  CHECK(p["active"] == true);
  CHECK(has(p["error"]["message"].get<std::string>(),
            "triage.json:6:76: nodes[2].next: no node has the id \"shrot\" (did you mean "
            "\"short\"?)"));

  // A Lua file of the same name beside it is refused, naming both; when the JSON goes, the Lua
  // file takes over.
  write_atomic(file, v2);
  wait_for([](const json& j) { return j["error"].is_null() && j.value("version", 0) == 2; });
  write_atomic(dir + "/triage.lua", R"(local o = require "orch"
return o.pipeline "triage" { o.node("lua", function() return { lua = true } end) }
)");
  json list;
  REQUIRE(eventually(
      [&] {
        list = srv.get("/api/pipelines").json_body();
        return has(list.dump(), "define the same pipeline (Lua and JSON)");
      },
      8000, 10));
  CHECK(pipeline().value("file", "") == file);
  REQUIRE(unlink(file.c_str()) == 0);
  p = wait_for([&](const json& j) { return j.value("file", "") == dir + "/triage.lua"; });
  CHECK(p["version"] == 3);
  id = srv.post("/api/pipelines/triage/runs", "{}").json_body()["run_id"];
  CHECK(srv.wait_run(id, "succeeded,failed")["output"]["lua"] == true);

  // The API's validate takes a JSON definition for a new name, and says its errors with their
  // column; nothing is written.
  r = srv.post("/api/pipelines/fresh/validate", v1);
  INFO(show(r));
  CHECK(r.status == 200);
  r = srv.post("/api/pipelines/fresh/validate",
               replace_all(v1, R"("type": "intelligence")", R"("type": "intel")"));
  INFO(show(r));
  CHECK(r.status == 422);
  json e = r.json_body()["errors"][0];
  CHECK(e["line"] == 5);
  CHECK(e["column"] == 29);
  CHECK(has(e["message"].get<std::string>(), "nodes[1].type: unknown node type \"intel\""));
  CHECK(access((dir + "/fresh.json").c_str(), F_OK) != 0);
  CHECK(srv.stop() == 0);
}
