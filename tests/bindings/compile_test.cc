// The pipeline compiler (engine/compile.cc) through the loader: every validation error is a
// diagnostic "test.lua:LINE: message" pointing at the line of the offending call, all of them
// are reported (sorted by line), and a valid pipeline gets stable paths and its defaults.
#include "engine/compile.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <set>

#include "engine/pipeline_loader.h"
#include "base/json_util.h"
#include "test_util.h"

using namespace orch;
using namespace orch::test;

namespace {

std::string all_of(const std::vector<Diagnostic>& diags) {
  std::string s;
  for (const auto& d : diags) s += d.str() + "\n";
  return s;
}

// 1-based number of the (only) line of `src` that contains `needle`.
int line_of(const std::string& src, const std::string& needle) {
  size_t pos = src.find(needle);
  INFO("needle: " << needle);
  REQUIRE(pos != std::string::npos);
  REQUIRE(src.find(needle, pos + 1) == std::string::npos);
  return 1 + static_cast<int>(std::count(src.begin(), src.begin() + static_cast<long>(pos), '\n'));
}

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

// Exactly one diagnostic, in test.lua, at `line`, whose message contains `text`.
void expect_one(const std::vector<Diagnostic>& diags, int line, const std::string& text) {
  INFO(all_of(diags));
  REQUIRE(diags.size() == 1);
  CHECK(diags[0].file == "test.lua");
  CHECK(diags[0].line == line);
  CHECK(contains(diags[0].message, text));
  CHECK(diags[0].str() == "test.lua:" + std::to_string(line) + ": " + diags[0].message);
}

// Some diagnostic at `line` whose message contains `text`.
bool has_diag(const std::vector<Diagnostic>& diags, int line, const std::string& text) {
  for (const auto& d : diags)
    if (d.file == "test.lua" && d.line == line && contains(d.message, text)) return true;
  return false;
}

std::unique_ptr<Pipeline> load_ok(const std::string& src) {
  std::vector<Diagnostic> diags;
  auto p = load_pipeline_source("test.lua", src, LoadOptions{}, &diags);
  INFO(all_of(diags));
  REQUIRE(diags.empty());
  REQUIRE(p);
  return p;
}

}  // namespace

TEST_CASE("compile: a Lua syntax error is reported at its line", "[compile]") {
  const std::string src = R"(local o = require "orch"
local x = = 1
return o.pipeline "p" { o.node("a", function() end) }
)";
  auto d = Harness::diagnose(src);
  expect_one(d, 2, "unexpected symbol near '='");

  // An unclosed call: Lua reports it where it notices, naming the line it was opened at.
  const std::string src2 = R"(local o = require "orch"
return o.pipeline "p" {
  o.node("a", function() return {} end
}
)";
  auto d2 = Harness::diagnose(src2);
  expect_one(d2, 4, "')' expected (to close '(' at line 3)");
}

TEST_CASE("compile: unknown node option, with a did-you-mean hint", "[compile]") {
  const std::string src = R"(local o = require "orch"
return o.pipeline "p" {
  o.node("first", function() return {} end),
  o.node("fetch", function() return {} end, { retries = 3 }),
}
)";
  auto d = Harness::diagnose(src);
  expect_one(d, line_of(src, "retries"), "node 'fetch': unknown option 'retries'");
  CHECK(contains(d[0].message, "(did you mean 'retry'?)"));
  CHECK(contains(d[0].message, "known: retry, timeout, optional, fallback, skip_if, escalate, concurrency_key, concurrency, description"));

  // Nothing close: no hint, but the list of known options.
  const std::string src2 = R"(local o = require "orch"
return o.pipeline "p" {
  o.node("fetch", function() return {} end, { colour = "red" }),
}
)";
  auto d2 = Harness::diagnose(src2);
  expect_one(d2, 3, "unknown option 'colour'");
  CHECK_FALSE(contains(d2[0].message, "did you mean"));
  CHECK(contains(d2[0].message, "known: "));
}

TEST_CASE("compile: did_you_mean", "[compile]") {
  const std::vector<std::string> opts = {"retry",    "timeout", "optional",
                                         "fallback", "skip_if", "description"};
  CHECK(did_you_mean("retries", opts) == "retry");
  CHECK(did_you_mean("rety", opts) == "retry");
  CHECK(did_you_mean("timout", opts) == "timeout");
  CHECK(did_you_mean("Timeout", opts) == "timeout");
  CHECK(did_you_mean("skipif", opts) == "skip_if");
  CHECK(did_you_mean("colour", opts) == "");
  CHECK(did_you_mean("x", opts) == "");
  CHECK(did_you_mean("retry", {}) == "");
}

TEST_CASE("compile: the line is where the o.node call starts, even across lines", "[compile]") {
  const std::string src = R"(local o = require "orch"
return o.pipeline "p" {
  o.node("a", function() return {} end),
  o.node("slow", function(ctx, input)
    local x = 1
    return { x = x }
  end, { timout = "5s" }),
}
)";
  auto d = Harness::diagnose(src);
  expect_one(d, line_of(src, "o.node(\"slow\""),
             "unknown option 'timout' (did you mean 'timeout'?)");
}

TEST_CASE("compile: a duplicate id names where it was first used", "[compile]") {
  const std::string src = R"(local o = require "orch"
return o.pipeline "p" {
  o.node("fetch", function() return {} end),
  o.node("other", function() return {} end),
  o.seq("group", {
    o.node("fetch", function() return {} end),
  }),
}
)";
  auto d = Harness::diagnose(src);
  INFO(all_of(d));
  REQUIRE(d.size() == 1);
  CHECK(d[0].line == 6);
  CHECK(contains(d[0].message, "duplicate id 'fetch' (first used at test.lua:3)"));
}

TEST_CASE("compile: options of the wrong type", "[compile]") {
  struct Case {
    const char* opts;
    const char* message;
  };
  const Case cases[] = {
      {"{ timeout = true }",
       "node 'a' timeout: expected a duration like \"30s\" or a number of seconds, got boolean"},
      {"{ timeout = \"5 parsecs\" }", "invalid duration '5 parsecs'"},
      {"{ timeout = -1 }", "duration must be a non-negative number of seconds"},
      {"{ timeout = 0 }", "node 'a': timeout must be greater than zero"},
      {"{ optional = \"yes\" }", "node 'a': optional must be true or false, got a string"},
      {"{ retry = 0 }", "node 'a': retry must be a whole number of attempts between 1 and 1000"},
      {"{ retry = 2.5 }", "retry must be a whole number of attempts"},
      {"{ retry = \"3\" }",
       "retry must be a number of attempts or a table {max=, backoff=, base=, cap=, jitter=}, got "
       "string"},
      {"{ retry = { max = \"x\" } }",
       "node 'a': retry.max must be a whole number of attempts between 1 and 1000"},
      {"{ retry = { max = 3, backoff = \"linear\" } }",
       "retry.backoff must be \"exponential\" or \"fixed\""},
      {"{ retry = { max = 3, jitter = \"no\" } }", "retry.jitter must be true or false"},
      {"{ retry = { max = 3, base = {} } }", "node 'a' retry.base: expected a duration"},
      {"{ retry = { max = 3, tries = 2 } }", "node 'a' retry: unknown option 'tries'"},
      {"{ fallback = \"default\" }", "fallback must be a function(ctx, input, err), got a string"},
      {"{ skip_if = 1 }", "skip_if must be a function(ctx, input) or a boolean, got a number"},
      {"\"fast\"", "node 'a': options must be a table, got a string"},
      // A list entry is not an option (it used to be ignored: retry = { 3 } meant one attempt).
      {"{ 3 }", "node 'a': options are name = value pairs, but a list entry was given"},
      {"{ retry = { 3 } }",
       "node 'a' retry: options are name = value pairs, but a list entry was given"},
  };
  for (const auto& c : cases) {
    const std::string src = std::string("local o = require \"orch\"\n") +
                            "return o.pipeline \"p\" {\n"
                            "  o.node(\"a\", function() return {} end, " +
                            c.opts +
                            "),\n"
                            "}\n";
    INFO(src);
    auto d = Harness::diagnose(src);
    expect_one(d, 3, c.message);
  }
}

TEST_CASE("compile: a node body that is not a function", "[compile]") {
  const std::string src = R"(local o = require "orch"
return o.pipeline "p" {
  o.node("ok", function() return {} end),
  o.node("shell", "echo hi"),
  o.node("missing"),
}
)";
  auto d = Harness::diagnose(src);
  INFO(all_of(d));
  REQUIRE(d.size() == 2);
  CHECK(d[0].line == 4);
  CHECK(contains(d[0].message,
                 "node 'shell': the body must be a function(ctx, input), got a string"));
  CHECK(d[1].line == 5);
  CHECK(
      contains(d[1].message, "node 'missing': the body must be a function(ctx, input), got a nil"));
}

TEST_CASE("compile: an empty pipeline", "[compile]") {
  const std::string src = R"(local o = require "orch"

return o.pipeline "empty" {
  description = "nothing here",
}
)";
  auto d = Harness::diagnose(src);
  expect_one(d, 3, "pipeline 'empty' has no steps; add at least one o.node(...)");
}

TEST_CASE("compile: a file that returns nothing", "[compile]") {
  const std::string src = R"(local o = require "orch"
local p = o.pipeline "p" { o.node("a", function() end) }
)";
  auto d = Harness::diagnose(src);
  INFO(all_of(d));
  REQUIRE(d.size() == 1);
  CHECK(d[0].file == "test.lua");
  CHECK(d[0].line == 0);  // not about any one line
  CHECK(contains(d[0].message, "the file does not return a pipeline"));
  CHECK(contains(d[0].message, "return o.pipeline \"name\""));
  CHECK(d[0].str() == "test.lua: " + d[0].message);
}

TEST_CASE("compile: a file that returns something else than a pipeline", "[compile]") {
  struct Case {
    const char* ret;
    const char* what;
  };
  const Case cases[] = {
      {"{ o.node(\"a\", function() end) }", "but it returns a plain table"},
      {"42", "but it returns a number"},
      {"\"p\"", "but it returns a string"},
      {"o.node(\"a\", function() end)", "but it returns o.node(...)"},
      {"o.seq { o.node(\"a\", function() end) }", "but it returns o.seq(...)"},
  };
  for (const auto& c : cases) {
    const std::string src = std::string("local o = require \"orch\"\nreturn ") + c.ret + "\n";
    INFO(src);
    auto d = Harness::diagnose(src);
    INFO(all_of(d));
    REQUIRE(d.size() == 1);
    CHECK(d[0].file == "test.lua");
    CHECK(contains(d[0].message, "the file must return o.pipeline \"name\" { ... }"));
    CHECK(contains(d[0].message, c.what));
  }
}

TEST_CASE("compile: a hole in the list of steps (an undefined local)", "[compile]") {
  const std::string src = R"(local o = require "orch"
local fetch = o.node("fetch", function() return {} end)
local parse
local store = o.node("store", function() return {} end)
return o.pipeline "p" {
  fetch,
  parse,
  store,
}
)";
  auto d = Harness::diagnose(src);
  INFO(all_of(d));
  REQUIRE(!d.empty());
  CHECK(has_diag(d, 5, "pipeline 'p': the list of steps has a hole"));
  for (const auto& x : d) CHECK(x.line == 5);

  // The same inside an o.seq: reported at the seq.
  const std::string src2 = R"(local o = require "orch"
local a = o.node("a", function() return {} end)
local b
local c = o.node("c", function() return {} end)
return o.pipeline "p" {
  o.node("first", function() return {} end),
  o.seq("group", { a, b, c }),
}
)";
  auto d2 = Harness::diagnose(src2);
  INFO(all_of(d2));
  CHECK(has_diag(d2, 7, "o.seq 'group': the list of steps has a hole"));
}

TEST_CASE("compile: something that is not a step in the list", "[compile]") {
  const std::string src = R"(local o = require "orch"
return o.pipeline "p" {
  o.node("a", function() return {} end),
  { o.node("b", function() return {} end) },
  "c",
}
)";
  auto d = Harness::diagnose(src);
  INFO(all_of(d));
  REQUIRE(d.size() == 2);
  CHECK(
      has_diag(d, 2,
               "step 2: expected a step (o.node, o.seq, o.parallel, o.when, o.switch, o.approve, "
               "o.map, o.loop, o.call, o.wait), "
               "got a plain table; wrap a list of steps in o.seq { ... }"));
  CHECK(has_diag(d, 2, "step 3: expected a step"));
}

TEST_CASE("compile: a parallel branch without an id", "[compile]") {
  const std::string src = R"(local o = require "orch"
return o.pipeline "p" {
  o.parallel("fan", {
    o.node("a", function() return {} end),
    o.seq { o.node("b", function() return {} end), o.node("c", function() return {} end) },
  }),
}
)";
  auto d = Harness::diagnose(src);
  expect_one(d, 3, "parallel 'fan': branch 2 needs an id");
  CHECK(contains(d[0].message, "o.seq(\"name\", { ... })"));

  // With an id the same branch is fine.
  const std::string fixed = R"(local o = require "orch"
return o.pipeline "p" {
  o.parallel("fan", {
    o.node("a", function() return {} end),
    o.seq("bc", { o.node("b", function() return {} end), o.node("c", function() return {} end) }),
  }),
}
)";
  CHECK(Harness::diagnose(fixed).empty());
}

TEST_CASE("compile: parallel join out of range or misspelt", "[compile]") {
  struct Case {
    const char* opts;
    const char* message;
  };
  const Case cases[] = {
      {"{ join = 3 }", "parallel 'fan': join = 3 must be between 1 and the number of branches (2)"},
      {"{ join = 0 }", "join = 0 must be between 1 and the number of branches (2)"},
      {"{ join = 1.5 }", "join = 1.5 must be between 1 and the number of branches (2)"},
      {"{ join = \"some\" }", "join must be \"all\", \"any\" or a number of branches, got 'some'"},
      {"{ join = true }", "join must be \"all\", \"any\" or a number"},
      {"{ max = 0 }", "max must be a whole number of branches >= 1"},
      {"{ joins = \"all\" }", "parallel 'fan': unknown option 'joins' (did you mean 'join'?)"},
      {"\"all\"", "parallel 'fan': options must be a table {join=, max=}"},
      {"{ \"any\" }", "parallel 'fan': options are name = value pairs, but a list entry was given"},
  };
  for (const auto& c : cases) {
    const std::string src = std::string("local o = require \"orch\"\n") +
                            "return o.pipeline \"p\" {\n"
                            "  o.parallel(\"fan\", {\n"
                            "    o.node(\"a\", function() return {} end),\n"
                            "    o.node(\"b\", function() return {} end),\n"
                            "  }, " +
                            c.opts +
                            "),\n"
                            "}\n";
    INFO(src);
    auto d = Harness::diagnose(src);
    expect_one(d, 3, c.message);
  }
  // In range: fine, and join = n is the same as "all".
  auto p = load_ok(R"(local o = require "orch"
return o.pipeline "p" {
  o.parallel("one", { o.node("a", function() end), o.node("b", function() end) }, { join = 1 }),
  o.parallel("two", { o.node("c", function() end), o.node("d", function() end) }, { join = 2 }),
  o.parallel("any", { o.node("e", function() end), o.node("f", function() end) }, { join = "any", max = 1 }),
}
)");
  CHECK(p->by_path.at("one")->parallel().join == 1);
  // join = n equal to the number of branches still means n successes (optional failures do
  // not count), unlike "all".
  CHECK(p->by_path.at("two")->parallel().join == 2);
  CHECK(p->by_path.at("any")->parallel().join == -1);
  CHECK(p->by_path.at("any")->parallel().max_concurrency == 1);
}

TEST_CASE("compile: a parallel without branches", "[compile]") {
  const std::string src = R"(local o = require "orch"
return o.pipeline "p" {
  o.node("a", function() return {} end),
  o.parallel("fan", {}),
}
)";
  auto d = Harness::diagnose(src);
  expect_one(d, 4, "parallel 'fan': expects a non-empty list of branches");
}

TEST_CASE("compile: a switch with no cases or a selector that is not a function", "[compile]") {
  const std::string src = R"(local o = require "orch"
return o.pipeline "p" {
  o.switch("route", function() return "x" end, {}),
}
)";
  auto d = Harness::diagnose(src);
  expect_one(d, 3, "switch 'route': needs at least one case");

  const std::string src2 = R"(local o = require "orch"
return o.pipeline "p" {
  o.node("a", function() return {} end),
  o.switch("route", "severity", {
    page = o.node("page", function() return {} end),
  }),
}
)";
  auto d2 = Harness::diagnose(src2);
  expect_one(d2, 4,
             "switch 'route': the selector must be a function(ctx, input) returning a "
             "case name, got a string");

  const std::string src3 = R"(local o = require "orch"
return o.pipeline "p" {
  o.switch("route", function() return "x" end),
}
)";
  auto d3 = Harness::diagnose(src3);
  expect_one(d3, 3, "switch 'route': cases must be a table");

  const std::string src4 = R"(local o = require "orch"
return o.pipeline "p" {
  o.switch("route", function() return "x" end, {
    page = "pager",
  }),
}
)";
  auto d4 = Harness::diagnose(src4);
  expect_one(d4, 3, "switch 'route' case 'page': expected a step");
}

TEST_CASE("compile: o.when problems", "[compile]") {
  const std::string src = R"(local o = require "orch"
return o.pipeline "p" {
  o.node("a", function() return {} end),
  o.when("check", "yes", o.node("b", function() return {} end)),
  o.when("nothen", function() return true end),
}
)";
  auto d = Harness::diagnose(src);
  INFO(all_of(d));
  REQUIRE(d.size() == 2);
  CHECK(has_diag(d, 4, "when 'check': the condition must be a function(ctx, input), got a string"));
  CHECK(has_diag(d, 5, "when 'nothen': needs a step to run when the condition holds"));
}

TEST_CASE("compile: an invalid pipeline name", "[compile]") {
  const std::string src = R"(local o = require "orch"
return o.pipeline "my pipeline" {
  o.node("a", function() return {} end),
}
)";
  auto d = Harness::diagnose(src);
  expect_one(d, 2, "pipeline name 'my pipeline' is invalid");

  // The table form. (Not `return o.pipeline { ... }`: that is a tail call, after which Lua no
  // longer knows the caller's line.)
  const std::string src2 = R"(local o = require "orch"

local p = o.pipeline {
  name = 42,
  o.node("a", function() return {} end),
}
return p
)";
  auto d2 = Harness::diagnose(src2);
  expect_one(d2, 3, "pipeline name must be a string, got number");

  // The table form with a good name is fine.
  auto p = load_ok(R"(local o = require "orch"
return o.pipeline { name = "etl.daily-v2", o.node("a", function() end) }
)");
  CHECK(p->name == "etl.daily-v2");
}

TEST_CASE("compile: an invalid node id", "[compile]") {
  struct Case {
    const char* id;
    const char* message;
  };
  const Case cases[] = {
      {"\"a/b\"",
       "o.node 'a/b': invalid id (use letters, digits, '_' and '-', starting with a letter)"},
      {"\"1st\"", "o.node '1st': invalid id"},
      {"\"\"", "o.node '': invalid id"},
      {"\"has space\"", "o.node 'has space': invalid id"},
      {"42", "o.node: the first argument must be the step's id (a string), got a number"},
      {"function() end",
       "o.node: the first argument must be the step's id (a string), got a function"},
  };
  for (const auto& c : cases) {
    const std::string src = std::string("local o = require \"orch\"\n") +
                            "return o.pipeline \"p\" {\n"
                            "  o.node(\"ok\", function() return {} end),\n"
                            "  o.node(" +
                            c.id +
                            ", function() return {} end),\n"
                            "}\n";
    INFO(src);
    auto d = Harness::diagnose(src);
    expect_one(d, 4, c.message);
  }
  const std::string seq = R"(local o = require "orch"
return o.pipeline "p" {
  o.seq("x/y", { o.node("a", function() return {} end) }),
}
)";
  expect_one(Harness::diagnose(seq), 3, "o.seq 'x/y': invalid id");
}

TEST_CASE("compile: an unknown pipeline field", "[compile]") {
  const std::string src = R"(local o = require "orch"
return o.pipeline "p" {
  descripton = "typo",
  o.node("a", function() return {} end),
}
)";
  auto d = Harness::diagnose(src);
  expect_one(d, 2, "pipeline 'p': unknown option 'descripton' (did you mean 'description'?)");
  CHECK(contains(d[0].message, "known: description, triggers, defaults, tags"));

  const std::string src2 = R"(local o = require "orch"
return o.pipeline "p" {
  defaults = { retries = 2 },
  tags = { "ok", 3 },
  o.node("a", function() return {} end),
}
)";
  auto d2 = Harness::diagnose(src2);
  INFO(all_of(d2));
  REQUIRE(d2.size() == 2);
  CHECK(has_diag(d2, 2, "pipeline 'p' defaults: unknown option 'retries' (did you mean 'retry'?)"));
  CHECK(has_diag(d2, 2, "pipeline 'p': tags must be strings"));
}

// o.node(id, fn, opts) and o.when(id, cond, then, else): a further argument (e.g. options split
// in two tables) must be reported, not silently dropped.
TEST_CASE("compile: extra arguments to o.node and o.when", "[compile]") {
  const std::string src = R"(local o = require "orch"
return o.pipeline "p" {
  o.node("a", function() return {} end),
  o.node("b", function() return {} end, { retry = 2 }, { timeout = "5s" }),
}
)";
  auto d = Harness::diagnose(src);
  expect_one(d, 4, "node 'b': o.node takes (id, function, options); extra arguments given");

  const std::string src2 = R"(local o = require "orch"
local function ok() return {} end
return o.pipeline "p" {
  o.when("w", true, o.node("x", ok), o.node("y", ok), o.node("z", ok)),
}
)";
  auto d2 = Harness::diagnose(src2);
  expect_one(d2, 4, "when 'w': o.when takes (id, condition, then_step [, else_step])");
}

TEST_CASE("compile: several errors in one file are all reported, sorted by line", "[compile]") {
  const std::string src = R"(local o = require "orch"
return o.pipeline "p" {
  o.node("a", function() return {} end, { retries = 3 }),
  o.node("b", function() return {} end, { timeout = true }),
  o.node("a", function() return {} end),
  o.parallel("fan", {
    o.seq { o.node("c", function() return {} end) },
  }),
  o.node("d", "not a function"),
  triggers = {
    o.webhook { secret = "HOOK" },
  },
  colour = "blue",
}
)";
  auto d = Harness::diagnose(src);
  INFO(all_of(d));
  REQUIRE(d.size() == 7);
  // Sorted by line, whatever order the compiler found them in (pipeline fields and triggers
  // are looked at before the steps; the parallel's branch check runs after its branches).
  for (size_t i = 1; i < d.size(); i++) CHECK(d[i - 1].line <= d[i].line);
  CHECK(has_diag(d, 2, "unknown option 'colour'"));
  CHECK(has_diag(d, 3, "node 'a': unknown option 'retries'"));
  CHECK(has_diag(d, 4, "node 'b' timeout: expected a duration"));
  CHECK(has_diag(d, 5, "duplicate id 'a' (first used at test.lua:3)"));
  CHECK(has_diag(d, 6, "parallel 'fan': branch 1 needs an id"));
  CHECK(has_diag(d, 9, "node 'd': the body must be a function"));
  CHECK(has_diag(d, 11, "o.webhook: 'path' must be a string starting with '/'"));
  CHECK(d.back().line == 11);
}

TEST_CASE("compile: triggers are validated", "[compile]") {
  const std::string src = R"(local o = require "orch"
return o.pipeline "p" {
  triggers = {
    o.webhook { method = "POST" },
    o.webhook { path = "hooks/deploy" },
    o.schedule "every day at noon",
    o.schedule "*/5 * * *",
    o.schedule "@sometimes",
    o.schedule { },
    "manual",
    o.schedule { cron = "61 * * * *" },
    o.schedule { cron = "0 9 * * *", tz = "Mars/Olympus", missed = "twice" },
    o.webhook { path = "/x", secret = "not a name", input = "raw" },
  },
  o.node("a", function() return {} end),
}
)";
  auto d = Harness::diagnose(src);
  INFO(all_of(d));
  REQUIRE(d.size() == 13);
  CHECK(has_diag(
      d, 2, "triggers[7] must be o.webhook{...}, o.schedule \"cron\" or o.manual{}, got a string"));
  CHECK(has_diag(d, 4, "o.webhook: unknown option 'method' (known: path, secret,"));
  CHECK(has_diag(d, 4, "o.webhook: 'path' must be a string starting with '/'"));
  CHECK(has_diag(d, 5, "o.webhook: 'path' must be a string starting with '/'"));
  CHECK(has_diag(d, 6, "o.schedule: 'every day at noon': expected 5 fields"));
  CHECK(has_diag(d, 7, "o.schedule: '*/5 * * *': expected 5 fields"));
  CHECK(has_diag(d, 8, "o.schedule: '@sometimes': unknown macro @sometimes"));
  CHECK(has_diag(d, 9, "o.schedule: '': "));
  CHECK(has_diag(d, 11, "o.schedule: '61 * * * *': minute: 61 is out of range 0-59"));
  CHECK(has_diag(d, 12, "unknown time zone 'Mars/Olympus'"));
  CHECK(has_diag(d, 12, "o.schedule: 'missed' must be \"skip\" or \"run_once\""));
  CHECK(has_diag(d, 13, "o.webhook: 'secret' is the NAME of a secret"));
  CHECK(has_diag(d, 13, "o.webhook: 'input' must be \"body\" or \"envelope\""));

  const std::string src2 = R"(local o = require "orch"
return o.pipeline "p" {
  triggers = o.manual(),
  o.node("a", function() return {} end),
}
)";
  // A single trigger instead of a list (it used to be read as an empty list, and ignored).
  expect_one(Harness::diagnose(src2), 2,
             "pipeline 'p': triggers must be a list: triggers = { o.manual... }");

  const std::string src3 = R"(local o = require "orch"
return o.pipeline "p" {
  triggers = "daily",
  o.node("a", function() return {} end),
}
)";
  expect_one(Harness::diagnose(src3), 2, "pipeline 'p': triggers must be a list");
}

TEST_CASE("compile: valid triggers are kept with their lines and options", "[compile]") {
  const std::string src = R"(local o = require "orch"
return o.pipeline "p" {
  triggers = {
    o.webhook { path = "/hooks/deploy", secret = "DEPLOY_HOOK" },
    o.schedule "*/5 * * * *",
    o.schedule "@daily",
    o.manual(),
  },
  o.node("a", function() return {} end),
}
)";
  auto p = load_ok(src);
  REQUIRE(p->triggers.size() == 4);
  CHECK(p->triggers[0].type == "webhook");
  CHECK(p->triggers[0].line == 4);
  CHECK(parse_json(p->triggers[0].spec, nullptr) ==
        json{{"path", "/hooks/deploy"}, {"secret", "DEPLOY_HOOK"}});
  CHECK(p->triggers[1].type == "schedule");
  CHECK(p->triggers[1].line == 5);
  CHECK(parse_json(p->triggers[1].spec, nullptr) == json{{"cron", "*/5 * * * *"}});
  CHECK(p->triggers[2].line == 6);
  CHECK(parse_json(p->triggers[2].spec, nullptr) == json{{"cron", "@daily"}});
  CHECK(p->triggers[3].type == "manual");
  CHECK(p->triggers[3].line == 7);
}

TEST_CASE("compile: stable ids and paths on a valid pipeline", "[compile]") {
  const std::string src = R"(local o = require "orch"
local function ok() return {} end
return o.pipeline "paths" {
  description = "all the step kinds",
  tags = { "ops", "nightly" },
  o.node("start", ok),
  o.parallel("gather", {
    o.node("metrics", ok),
    o.seq("logs", { o.node("fetch", ok), o.node("parse", ok) }),
  }, { join = "any" }),
  o.seq { o.node("plain", ok) },
  o.seq("prep", { o.node("clean", ok), o.seq { o.node("inner", ok) } }),
  o.switch("route", function() return "page" end, {
    page = o.node("page", ok),
    default = o.node("ignore", ok),
    alert = o.node("alert", ok),
  }),
  o.when("check", true, o.node("yes", ok), o.node("no", ok)),
  o.when("check2", function() return false end, o.node("only", ok)),
}
)";
  auto p = load_ok(src);
  CHECK(p->name == "paths");
  CHECK(p->description == "all the step kinds");
  CHECK(p->tags == std::vector<std::string>{"ops", "nightly"});
  CHECK(p->file == "test.lua");
  CHECK(p->sha256 == sha256_hex(src));
  CHECK(p->node_count == 13);

  std::set<std::string> paths;
  for (const auto& [k, v] : p->by_path) {
    paths.insert(k);
    CHECK(v->path == k);
  }
  CHECK(paths == std::set<std::string>{"start", "gather", "gather/metrics", "gather/logs",
                                       "gather/logs/fetch", "gather/logs/parse", "plain", "prep",
                                       "prep/clean", "prep/inner", "route", "route/page",
                                       "route/ignore", "route/alert", "check", "check/yes",
                                       "check/no", "check2", "check2/only"});

  CHECK(p->by_path.at("gather")->kind() == StepKind::Parallel);
  CHECK(p->by_path.at("gather")->parallel().join == -1);
  CHECK(p->by_path.at("gather/logs")->kind() == StepKind::Seq);
  CHECK(p->by_path.at("gather/logs/parse")->kind() == StepKind::Node);
  CHECK(p->by_path.at("gather/logs/parse")->id == "parse");
  CHECK(p->by_path.at("route")->kind() == StepKind::Switch);
  CHECK(p->by_path.at("check")->kind() == StepKind::When);
  CHECK(p->by_path.at("prep")->kind() == StepKind::Seq);

  // Lines are those of the calls.
  CHECK(p->by_path.at("start")->line == line_of(src, "o.node(\"start\""));
  CHECK(p->by_path.at("gather")->line == line_of(src, "o.parallel(\"gather\""));
  CHECK(p->by_path.at("gather/metrics")->line == line_of(src, "o.node(\"metrics\""));
  CHECK(p->by_path.at("route/alert")->line == line_of(src, "o.node(\"alert\""));
  CHECK(p->by_path.at("check2/only")->line == line_of(src, "o.node(\"only\""));

  // The tree: the root is a seq of the top-level steps in order.
  REQUIRE(p->root);
  CHECK(p->root->kind() == StepKind::Seq);
  REQUIRE(p->root->children.size() == 7);
  CHECK(p->root->children[0]->path == "start");
  CHECK(p->root->children[2]->kind() == StepKind::Seq);
  CHECK(p->root->children[2]->path.empty());  // anonymous seq: no id, no path
  CHECK(p->root->children[2]->children.at(0)->path == "plain");
  // Switch cases are sorted by name with default last.
  const Step* route = p->by_path.at("route");
  CHECK(route->switch_().case_keys == std::vector<std::string>{"alert", "page", "default"});
  REQUIRE(route->children.size() == 3);
  CHECK(route->children[0]->path == "route/alert");
  CHECK(route->children[1]->path == "route/page");
  CHECK(route->children[2]->path == "route/ignore");
  // When: [then, else]; no else is a null child.
  const Step* check = p->by_path.at("check");
  REQUIRE(check->children.size() == 2);
  CHECK(check->children[0]->path == "check/yes");
  CHECK(check->children[1]->path == "check/no");
  const Step* check2 = p->by_path.at("check2");
  REQUIRE(check2->children.size() == 2);
  CHECK(check2->children[0]->path == "check2/only");
  CHECK(check2->children[1] == nullptr);
  // Without defaults: one attempt, no timeout.
  CHECK(p->by_path.at("start")->node().retry.max_attempts == 1);
  CHECK(p->by_path.at("start")->node().timeout_ms == 0);
  CHECK_FALSE(p->by_path.at("start")->node().fn.empty());
}

TEST_CASE("compile: pipeline defaults apply to nodes unless overridden", "[compile]") {
  auto p = load_ok(R"(local o = require "orch"
local function ok() return {} end
return o.pipeline "defaults" {
  defaults = { retry = 3, timeout = "5s" },
  o.node("plain", ok),
  o.node("fast", ok, { timeout = "1s" }),
  o.node("once", ok, { retry = 1 }),
  o.node("custom", ok, { retry = { max = 5, backoff = "fixed", base = "2s", jitter = false } }),
  o.node("described", ok, { description = "has options, but not these", optional = true }),
  o.seq("group", { o.node("nested", ok, { timeout = 0.25 }) }),
}
)");
  const Step* plain = p->by_path.at("plain");
  CHECK(plain->node().retry.max_attempts == 3);
  CHECK(plain->node().timeout_ms == 5000);
  const Step* fast = p->by_path.at("fast");
  CHECK(fast->node().retry.max_attempts == 3);
  CHECK(fast->node().timeout_ms == 1000);
  const Step* once = p->by_path.at("once");
  CHECK(once->node().retry.max_attempts == 1);
  CHECK(once->node().timeout_ms == 5000);
  const Step* custom = p->by_path.at("custom");
  CHECK(custom->node().retry.max_attempts == 5);
  CHECK_FALSE(custom->node().retry.exponential);
  CHECK(custom->node().retry.base_ms == 2000);
  CHECK_FALSE(custom->node().retry.jitter);
  CHECK(custom->node().timeout_ms == 5000);
  const Step* described = p->by_path.at("described");
  CHECK(described->node().retry.max_attempts == 3);
  CHECK(described->node().timeout_ms == 5000);
  CHECK(described->node().optional);
  CHECK(described->description == "has options, but not these");
  const Step* nested = p->by_path.at("group/nested");
  CHECK(nested->node().retry.max_attempts == 3);
  CHECK(nested->node().timeout_ms == 250);

  // A retry table in defaults is inherited whole.
  auto p2 = load_ok(R"(local o = require "orch"
return o.pipeline "defaults2" {
  defaults = { retry = { max = 4, backoff = "fixed", base = "100ms" } },
  o.node("a", function() return {} end),
}
)");
  const Step* a = p2->by_path.at("a");
  CHECK(a->node().retry.max_attempts == 4);
  CHECK_FALSE(a->node().retry.exponential);
  CHECK(a->node().retry.base_ms == 100);
  CHECK(a->node().timeout_ms == 0);

  // Bad defaults are reported at the pipeline.
  auto d = Harness::diagnose(R"(local o = require "orch"
return o.pipeline "p" {
  defaults = { retry = 0, timeout = "soon" },
  o.node("a", function() return {} end),
}
)");
  INFO(all_of(d));
  REQUIRE(d.size() == 2);
  CHECK(has_diag(d, 2, "pipeline 'p' defaults: retry must be a whole number of attempts"));
  CHECK(has_diag(d, 2, "pipeline 'p' defaults.timeout: invalid duration 'soon'"));
}

TEST_CASE("compile: the table form of o.pipeline keeps its line despite the tail call",
          "[compile]") {
  auto d = orch::test::Harness::diagnose(R"(local o = require "orch"

return o.pipeline { name = "bad name",
  o.node("a", function() end),
})");
  REQUIRE(d.size() == 1);
  CHECK(d[0].line == 3);
  CHECK(d[0].message.find("pipeline name 'bad name' is invalid") != std::string::npos);
}

TEST_CASE("compile: bytecode is refused with one clear message", "[compile]") {
  auto d = orch::test::Harness::diagnose(std::string("\x1bLJ\x02garbage"));
  REQUIRE(d.size() == 1);
  CHECK(d[0].str() == "test.lua: precompiled bytecode is not accepted; give the Lua source");
}

TEST_CASE("compile: a file that loops forever at load time is stopped", "[compile]") {
  orch::SandboxOptions sb;
  sb.load_limit_ms = 200;
  auto d = orch::test::Harness::diagnose("local o = require 'orch'\nwhile true do end\n", sb);
  REQUIRE(d.size() == 1);
  CHECK(d[0].line == 2);
  CHECK(d[0].message.find("loading took longer than 200 ms") != std::string::npos);
}

TEST_CASE("compile: approval gates are validated", "[compile]") {
  auto d = orch::test::Harness::diagnose(R"(local o = require "orch"
return o.pipeline "g" {
  o.approve("a", { message = 42 }),
  o.approve("b", { approvers = "alice" }),
  o.approve("c", { timeout = "soon" }),
  o.approve("d", { on_timeout = "maybe" }),
  o.approve("e", { approver = { "x" } }),
  o.approve("f", { approvers = {} }),
})");
  std::string all;
  for (auto& x : d) all += x.str() + "\n";
  INFO(all);
  CHECK(all.find("test.lua:3: approve 'a': message must be a string") != std::string::npos);
  CHECK(all.find("test.lua:4: approve 'b': approvers must be a list of names") !=
        std::string::npos);
  CHECK(all.find("test.lua:5: approve 'c' timeout: invalid duration 'soon'") != std::string::npos);
  CHECK(all.find("test.lua:6: approve 'd': on_timeout must be \"reject\" or \"approve\"") !=
        std::string::npos);
  CHECK(
      all.find("test.lua:7: approve 'e': unknown option 'approver' (did you mean 'approvers'?)") !=
      std::string::npos);
  CHECK(all.find("test.lua:8: approve 'f': approvers is empty") != std::string::npos);
  auto ok = orch::test::Harness::diagnose(R"(local o = require "orch"
return o.pipeline "g" { o.approve("go", { message = "ok?", approvers = { "a" }, timeout = "1h" }) })");
  CHECK(ok.empty());
}
