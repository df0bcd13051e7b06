// Hostile JSON (issue 12, finding 1 and the first item of finding 8), through the real binary:
// text nested thousands of levels deep ended `orchrun serve` (a Lua PANIC at 8,000 levels in the
// conversion to Lua, a SIGSEGV at 100,000 in the recursive copy of the parsed body), and so did
// `--input @deep.json`; a number beyond a double ({"n":1e309}) answered 500. Nesting is now
// bounded where the text is parsed (kMaxJsonDepth, base/json_util.h): deeper text is a 400 /
// exit 2 naming the limit, and text exactly at the limit still goes through.
#include <sqlite3.h>

#include <catch2/catch.hpp>
#include <string>

#include "http_test_server.h"
#include "base/json_util.h"
#include "serve_util.h"
#include "test_util.h"

using namespace orch;
using namespace orch::test;

namespace {

bool has(const std::string& s, const std::string& sub) {
  return s.find(sub) != std::string::npos;
}

std::string show(const HttpReply& r) {
  return "HTTP " + std::to_string(r.status) + " " + r.body.substr(0, 400) +
         (r.error.empty() ? "" : " (" + r.error + ")");
}

// Changes a database behind the back of the server that has it open (WAL: both may write).
void exec_sql(const std::string& db, const std::string& sql) {
  sqlite3* h = nullptr;
  REQUIRE(sqlite3_open_v2(db.c_str(), &h, SQLITE_OPEN_READWRITE, nullptr) == SQLITE_OK);
  sqlite3_busy_timeout(h, 5000);
  char* err = nullptr;
  int rc = sqlite3_exec(h, sql.c_str(), nullptr, nullptr, &err);
  std::string why = err ? err : "";
  sqlite3_free(err);
  sqlite3_close(h);
  INFO(why);
  REQUIRE(rc == SQLITE_OK);
}

// [[[...]]] with `depth` levels.
std::string nested_array(int depth) {
  return std::string(depth, '[') + std::string(depth, ']');
}
// {"a":{"a":...{}}} with `depth` levels.
std::string nested_object(int depth) {
  std::string s;
  for (int i = 1; i < depth; i++) s += R"({"a":)";
  return s + "{}" + std::string(depth - 1, '}');
}

// Counts the levels of a value built by nested_array / nested_object.
const char* kDepthFn = R"(
local function depth(v)
  local d = 0
  while type(v) == "table" do d = d + 1; v = v[1] or v.a end
  return d
end
)";

// A webhook and an API-started pipeline that report how deep their input arrived.
std::string hook_pipeline() {
  return std::string(R"(local o = require "orch")") + kDepthFn + R"(
return o.pipeline "hook" {
  triggers = { o.webhook { path = "/hooks/h" } },
  o.node("a", function(ctx) return { depth = depth(ctx.input.payload or ctx.input.deep or ctx.input) } end),
}
)";
}

std::string pipeline_dir(const TempDir& tmp) {
  std::string dir = tmp.file("pipelines");
  REQUIRE(run_cmd({"mkdir", "-p", dir}).exit_code == 0);
  write_file(dir + "/hook.lua", hook_pipeline());
  return dir;
}

// The "depth" output of node a in a finished run (-1 when absent).
int reported_depth(const json& run) {
  if (!run.contains("nodes")) return -1;
  for (auto& n : run["nodes"])
    if (n.value("node", "") == "a" && n.contains("output") && n["output"].is_object())
      return n["output"].value("depth", -1);
  return -1;
}

// The server is still up and still runs work: /healthz answers, and a normal webhook delivery
// starts a run that succeeds.
void check_server_alive(const ServeProcess& srv) {
  auto h = srv.get("/healthz");
  INFO(show(h) << "\n" << srv.log());
  REQUIRE(h.status == 200);
  auto r = srv.post("/hooks/h", R"({"x":1})");
  INFO(show(r));
  REQUIRE(r.status == 202);
  json run = srv.wait_run(r.json_body()["run_id"], "succeeded,failed");
  CHECK(run["status"] == "succeeded");
  CHECK(reported_depth(run) == 1);
}

}  // namespace

TEST_CASE(
    "hostile json: webhook bodies nested 8,000 and 100,000 deep are a 400; the server goes on",
    "[hostile][serve]") {
  TempDir tmp;
  ServeProcess srv(pipeline_dir(tmp), tmp.file("s.db"));
  for (int depth : {kMaxJsonDepth + 1, 8000, 100000}) {
    // The 201st level opens at byte 201 of [[[..., at byte 1001 of {"a":{"a":...
    for (auto [body, at] : {std::pair{nested_array(depth), 201}, {nested_object(depth), 1001}}) {
      auto r = srv.post("/hooks/h", body);
      INFO("depth " << depth << ": " << show(r) << "\n" << srv.log());
      REQUIRE(r.status == 400);
      CHECK(r.error_code() == "invalid_json");
      CHECK(has(r.body, "JSON nested deeper than 200 levels at byte " + std::to_string(at)));
    }
    check_server_alive(srv);
  }
  // Exactly at the limit: accepted, and the run sees every level (an array body arrives as
  // {"payload": [...]}, one level more than the body: records keep room for that).
  for (const std::string& body : {nested_array(kMaxJsonDepth), nested_object(kMaxJsonDepth)}) {
    auto r = srv.post("/hooks/h", body);
    INFO(show(r));
    REQUIRE(r.status == 202);
    json run = srv.wait_run(r.json_body()["run_id"], "succeeded,failed");
    INFO(run.dump());
    CHECK(run["status"] == "succeeded");
    CHECK(reported_depth(run) == kMaxJsonDepth);
  }
  CHECK(srv.stop() == 0);
}

TEST_CASE("hostile json: a number beyond a double is a 400 naming it, not a 500",
          "[hostile][serve]") {
  TempDir tmp;
  ServeProcess srv(pipeline_dir(tmp), tmp.file("s.db"));
  for (const char* body : {R"({"n":1e309})", R"({"n":-1e400})", R"([1, 2e99999])"}) {
    auto r = srv.post("/hooks/h", body);
    INFO(body << ": " << show(r));
    CHECK(r.status == 400);
    CHECK(r.error_code() == "invalid_json");
    CHECK(has(r.body, "is beyond the range of a double"));
  }
  auto r = srv.post("/hooks/h", R"({"n":1e309})");
  CHECK(has(r.body, "number 1e309 is beyond the range of a double at byte 6"));
  r = srv.post("/api/pipelines/hook/runs", R"({"input":{"n":1e309}})");
  INFO(show(r));
  CHECK(r.status == 400);
  CHECK(has(r.body, "number 1e309 is beyond the range of a double at byte 15"));
  // The largest doubles still go through.
  r = srv.post("/hooks/h", R"({"n":1.7976931348623157e308})");
  CHECK(r.status == 202);
  check_server_alive(srv);
  CHECK(srv.stop() == 0);
}

TEST_CASE("hostile json: the API start route refuses deep bodies with a 400", "[hostile][serve]") {
  TempDir tmp;
  ServeProcess srv(pipeline_dir(tmp), tmp.file("s.db"));
  for (int depth : {8000, 100000}) {
    auto r =
        srv.post("/api/pipelines/hook/runs", R"({"input":{"deep":)" + nested_array(depth) + "}}");
    INFO("depth " << depth << ": " << show(r) << "\n" << srv.log());
    REQUIRE(r.status == 400);
    CHECK(r.error_code() == "invalid_json");
    CHECK(has(r.body, "JSON nested deeper than 200 levels at byte 216"));
    r = srv.post("/api/pipelines/hook/runs", nested_array(depth));
    REQUIRE(r.status == 400);
    CHECK(has(r.body, "JSON nested deeper than 200 levels at byte 201"));
    check_server_alive(srv);
  }
  // The whole body at the limit: {"input": {"deep": [198 levels]}}.
  auto r = srv.post("/api/pipelines/hook/runs",
                    R"({"input":{"deep":)" + nested_array(kMaxJsonDepth - 2) + "}}");
  INFO(show(r));
  REQUIRE(r.status == 202);
  json run = srv.wait_run(r.json_body()["run_id"], "succeeded,failed");
  CHECK(run["status"] == "succeeded");
  CHECK(reported_depth(run) == kMaxJsonDepth - 2);
  CHECK(srv.stop() == 0);
}

TEST_CASE("hostile json: a damaged stored record nested 100,000 deep does not stop the server",
          "[hostile][serve]") {
  TempDir tmp;
  std::string db = tmp.file("s.db");
  ServeProcess srv(pipeline_dir(tmp), db);
  auto r = srv.post("/hooks/h", R"({"x":1})");
  REQUIRE(r.status == 202);
  std::string id = r.json_body()["run_id"];
  REQUIRE(srv.wait_run(id, "succeeded")["status"] == "succeeded");
  // Rows orchrun writes are never that deep; one changed behind its back is read back bounded.
  exec_sql(db, "update node_runs set output = " + sql_literal(nested_array(100000)) +
                   " where run_id = " + sql_literal(id));
  exec_sql(db, "update runs set output = " + sql_literal(nested_array(100000)) +
                   " where id = " + sql_literal(id));
  auto g = srv.get("/api/runs/" + id);
  INFO(show(g) << "\n" << srv.log());
  CHECK(g.status == 200);
  check_server_alive(srv);
  CHECK(srv.stop() == 0);
}

TEST_CASE("hostile json: --input nested too deep or beyond a double exits 2 naming the source",
          "[hostile][cli]") {
  TempDir tmp;
  std::string file = tmp.file("p.lua");
  write_file(file, std::string(R"(local o = require "orch")") + kDepthFn + R"(
return o.pipeline "p" {
  o.node("a", function(ctx) return { depth = depth(ctx.input.deep or ctx.input) } end),
  o.node("echo", function(ctx) return ctx.input end),
}
)");
  std::string db = tmp.file("c.db");
  for (int depth : {8000, 100000}) {
    write_file(tmp.file("deep.json"), nested_object(depth));
    auto c = orchrun({file, "--input", "@" + tmp.file("deep.json")}, db);
    INFO("depth " << depth << ": exit " << c.exit_code << "\n" << c.err);
    CHECK(c.exit_code == 2);
    CHECK(has(c.err, tmp.file("deep.json") +
                         " is not valid JSON: JSON nested deeper than 200 levels at byte 1001"));
    if (depth > 30000) continue;  // one argument holds at most 128 KiB (MAX_ARG_STRLEN)
    c = orchrun({file, "--input", R"({"deep":)" + nested_array(depth) + "}"}, db);
    CHECK(c.exit_code == 2);
    CHECK(has(c.err, "--input is not valid JSON: JSON nested deeper than 200 levels at byte 208"));
  }
  auto c = orchrun({file, "--input", R"({"n":1e309})"}, db);
  INFO(c.err);
  CHECK(c.exit_code == 2);
  CHECK(has(c.err, "--input is not valid JSON: number 1e309 is beyond the range of a double"));
  // At the limit: the input arrives whole and a node can return it (stored 200 deep).
  write_file(tmp.file("limit.json"), nested_object(kMaxJsonDepth));
  c = orchrun({file, "--input", "@" + tmp.file("limit.json")}, db);
  INFO(c.err);
  REQUIRE(c.exit_code == 0);
  std::string out = query_str(db, "select output from node_runs where node_id = 'a'");
  CHECK(out == R"({"depth":200})");
  CHECK(query_str(db, "select output from node_runs where node_id = 'echo'") ==
        nested_object(kMaxJsonDepth));
}

TEST_CASE(
    "hostile json: o.json.decode refuses deep text and huge numbers with nil, message; "
    "nothing deeper than the limit is built from Lua",
    "[hostile][json]") {
  TempDir tmp;
  std::string file = tmp.file("p.lua");
  write_file(file, R"(local o = require "orch"
local function d(text) local v, e = o.json.decode(text); return { ok = v ~= nil, err = e } end
local function chain(n)  -- n tables, one inside the other; the innermost is empty
  local root = {}
  local t = root
  for i = 2, n do t[1] = {}; t = t[1] end
  return root
end
return o.pipeline "p" {
  o.node("a", function()
    local limit = string.rep("[", 200) .. string.rep("]", 200)
    local back = o.json.decode(limit)
    local ok201, err201 = pcall(o.json.encode, chain(201))
    local okdeep, errdeep = pcall(o.json.encode, chain(100000))
    return {
      deep8k = d(string.rep("[", 8000) .. string.rep("]", 8000)),
      deep100k = d(string.rep('{"a":', 100000)),
      over = d('{"n":1e309}'),
      at_limit = back ~= nil and o.json.encode(back) == limit,
      chain200 = #o.json.encode(chain(200)),
      encode201 = { ok = ok201, err = tostring(err201) },
      encode100k = { ok = okdeep, err = tostring(errdeep) },
    }
  end),
  o.node("too_deep_output", function() return chain(201) end),
}
)");
  std::string db = tmp.file("c.db");
  auto c = orchrun({file}, db);
  INFO(c.err);
  CHECK(c.exit_code != 0);  // too_deep_output fails: its value cannot be stored
  std::string s = query_str(db, "select output from node_runs where node_id = 'a'");
  json out = parse_json(s, nullptr);
  INFO(s);
  REQUIRE(out.is_object());
  CHECK(out["deep8k"] == json({{"ok", false}, {"err", "1:201: nested deeper than 200 levels"}}));
  CHECK(out["deep100k"] == json({{"ok", false}, {"err", "1:1001: nested deeper than 200 levels"}}));
  CHECK(out["over"] ==
        json({{"ok", false}, {"err", "1:6: number 1e309 is beyond the range of a double"}}));
  CHECK(out["at_limit"] == true);
  CHECK(out["chain200"] == 400);
  CHECK(out["encode201"]["ok"] == false);
  CHECK(has(out["encode201"]["err"], "nested too deeply (more than 200 levels of tables)"));
  CHECK(out["encode100k"]["ok"] == false);
  CHECK(query_str(db, "select status from node_runs where node_id = 'too_deep_output'") ==
        "failed");
  CHECK(has(query_str(db, "select error_message from node_runs where node_id = 'too_deep_output'"),
            "nested too deeply"));
}

TEST_CASE("hostile json: an HTTP response nested 100,000 deep reaches the node as text only",
          "[hostile][http]") {
  HttpTestServer web([](const HttpTestRequest& r) {
    if (r.path == "/limit") return HttpTestResponse::json(200, nested_array(kMaxJsonDepth));
    return HttpTestResponse::json(200, nested_array(100000));
  });
  TempDir tmp;
  std::string file = tmp.file("p.lua");
  write_file(file, std::string(R"(local o = require "orch")") + kDepthFn + R"(
return o.pipeline "p" {
  o.node("a", function(ctx)
    local deep = o.http.request { url = ctx.input.url .. "/deep" }
    local limit = o.http.request { url = ctx.input.url .. "/limit" }
    return { deep_json = deep.json ~= nil, deep_body = #deep.body, limit_depth = depth(limit.json) }
  end),
}
)");
  std::string db = tmp.file("c.db");
  auto c = orchrun({file, "--input", dump_json(json{{"url", web.url("")}})}, db);
  INFO(c.err);
  REQUIRE(c.exit_code == 0);
  json out = parse_json(query_str(db, "select output from node_runs where node_id = 'a'"), nullptr);
  CHECK(out == json({{"deep_json", false}, {"deep_body", 200000}, {"limit_depth", 200}}));
}
