// Regression tests for what the fuzz targets (fuzz/) found. Each names the target and the
// input, kept in fuzz/corpus/<target>/ so that the fuzzers start from it too.
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <string>

#include "lua_eval.h"
#include "base/json_util.h"
#include "serve_util.h"
#include "test_util.h"

using namespace orch;
using namespace orch::test;

// fuzz_json (corpus/json/finding-nul-cut): nlohmann's lexer takes a NUL byte for the end of the
// input, so "[1]\0<anything>" parsed as [1] and the rest was never looked at: a webhook body,
// an API body or an --input file with a NUL was accepted as its prefix. The fuzzer saw
// parse_json accept a text that o.json.decode refused (for nesting after the NUL).
TEST_CASE("fuzz: JSON text holding a NUL byte is refused, not cut short at the NUL",
          "[regression][fuzz][json]") {
  const std::string text("{\"a\":1}\0{\"b\":[[[", 15);
  std::string err;
  CHECK(parse_json(text, &err).is_discarded());
  CHECK(contains(err, "byte 8"));
  CHECK(contains(err, "NUL"));
  // Escaped, a NUL is fine.
  CHECK(parse_json(R"({"a":"\u0000"})", &err)["a"] == std::string(1, '\0'));

  LuaEval eval;
  CHECK(eval(R"(local v, e = o.json.decode("[1]\0[2]") return { v = v, e = e })") ==
        R"({"e":"1:4: a NUL byte (0x00) cannot appear in JSON text"})");
  CHECK(eval(R"(return o.json.decode('"\\u0000"') == "\0")") == "true");

  // Through the binary: --input @file.
  TempDir tmp;
  write_file(tmp.file("p.lua"), R"(local o = require "orch"
return o.pipeline "p" { o.node("a", function(ctx) return ctx.input end) })");
  write_file(tmp.file("in.json"), text);
  auto r = orchrun({tmp.file("p.lua"), "--input", "@" + tmp.file("in.json")}, tmp.file("r.db"));
  CHECK(r.exit_code == 2);
  CHECK(contains(r.err, "is not valid JSON"));
  CHECK(contains(r.err, "NUL"));

  // Through orchrun serve: a webhook body.
  std::string dir = tmp.file("pipelines");
  mkdir(dir.c_str(), 0755);
  write_file(dir + "/open.lua", R"(local o = require "orch"
return o.pipeline "open" {
  triggers = { o.webhook { path = "/hooks/open" } },
  o.node("n", function() return {} end),
})");
  ServeProcess srv(dir, tmp.file("s.db"));
  HttpReply reply = srv.post("/hooks/open", text);
  INFO(reply.status << " " << reply.body);
  CHECK(reply.status == 400);
  CHECK(reply.error_code() == "invalid_json");
  CHECK(query_int(tmp.file("s.db"), "select count(*) from runs") == 0);
}

// Found while writing fuzz_pipeline (the target bounds loads by the engine's load limit): the
// sandbox's pcall passed on a node's deadline but swallowed the load limit and a condition's
// deadline, so `while true do pcall(function() while true do end end) end` at the top of a
// file (orchrun validate, POST /api/pipelines/NAME/validate) or in a condition ran forever on
// the loop thread. Here the outer loop is bounded, so that without the fix the load finishes
// (with the wrong diagnostic) instead of hanging the test.
TEST_CASE("fuzz: pcall cannot swallow the load limit of a pipeline file", "[regression][fuzz]") {
  SandboxOptions sb;
  sb.load_limit_ms = 200;
  auto d = Harness::diagnose(R"(local o = require "orch"
for i = 1, 20000 do pcall(function() while true do end end) end
return o.pipeline "p" { o.node("a", function() end) })",
                             sb);
  REQUIRE(d.size() == 1);
  CHECK(d[0].line == 2);
  CHECK(contains(d[0].message, "loading took longer than 200 ms"));
}

TEST_CASE("fuzz: pcall cannot swallow a condition's deadline", "[regression][fuzz]") {
  Harness h;
  auto s = h.run(R"(
    local o = require "orch"
    return o.pipeline "cond-pcall" {
      o.node("a", function() return {} end, { timeout = "300ms", skip_if = function()
        for i = 1, 20000 do pcall(function() while true do end end) end
        return false
      end }),
    })");
  CHECK(s.status == "failed");
  CHECK(contains(s.error_message, "condition ran past its deadline"));
  CHECK(query_int(h.db_path, "select count(*) from node_runs where status='succeeded'") == 0);
  CHECK(h.close().empty());
}

// Found by the pipeline target: o.schedule { cron = 5 } reached the compiler, whose
// spec.value("cron", "") threw nlohmann's type_error out of compile_pipeline (std::terminate:
// the end of orchrun validate, of a server's hot reload, of the API's validate thread).
TEST_CASE("fuzz: a schedule whose cron is not a string is a diagnostic, not a crash",
          "[regression][fuzz]") {
  for (const char* cron : {"5", "{}", "true"}) {
    auto d = Harness::diagnose(std::string(R"(local o = require "orch"
return o.pipeline "p" {
  triggers = { o.schedule { cron = )") + cron + R"( } },
  o.node("a", function() end),
})");
    INFO(cron);
    REQUIRE(d.size() == 1);
    CHECK(d[0].line == 3);
    CHECK(contains(d[0].message, "o.schedule: 'cron' must be a cron expression"));
  }
}

// Found by the template target: a value with invalid UTF-8 given to the json filter (or
// rendered as JSON) raised o.json.encode's error instead of an o.template one, so the author
// was told about a function they never called.
TEST_CASE("fuzz: o.template says which placeholder cannot be JSON", "[regression][fuzz]") {
  LuaEval eval;
  std::string r = eval(R"(return o.template("{{'odd\138key' | json}}", {}))");
  CHECK(r.rfind("error: ", 0) == 0);
  CHECK(contains(r, "o.template: the json filter: value: invalid UTF-8 in string"));
  r = eval(R"(return o.template("at {{x}}", { x = { "bad\255" } }))");
  CHECK(contains(r, "o.template: cannot render {{x}} at line 1, column 4 as JSON: "));
  // What is valid still renders.
  CHECK(eval(R"(return o.template("{{x | json}}", { x = { 1, "é" } }))") == R"("[1,\"é\"]")");
}
