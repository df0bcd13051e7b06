// o.template (stdlib/orch/template.lua): paths, defaults, filters, rendering of non-strings,
// and errors that name the key and the position.
#include <catch2/catch.hpp>

#include "lua_eval.h"

using namespace orch;
using namespace orch::test;

namespace {

const char kData[] = R"(
  local data = {
    title = "Disk full", count = 3, ratio = 0.25, big = 1e15, up = false,
    alerts = { { labels = { severity = "critical", instance = "db1" } },
               { labels = { severity = "warning" } } },
    ["odd.key"] = "dotted", tags = { "a", "b" }, nothing = o.json.null,
    nested = { x = 1 },
  }
)";

}  // namespace

TEST_CASE("o.template substitutes paths, with array indexes in both spellings",
          "[stdlib][template]") {
  LuaEval eval;
  auto t = [&](const std::string& tmpl) {
    return eval(std::string(kData) + "local r = o.template(" + tmpl + ", data) return r");
  };
  CHECK(
      t(R"("Alert {{title}}: {{ alerts[1].labels.severity }} on {{alerts.1.labels.instance}}")") ==
      R"("Alert Disk full: critical on db1")");
  CHECK(t(R"("last: {{ alerts[-1].labels.severity }}")") == R"("last: warning")");
  CHECK(t(R"("{{ ['odd.key'] }}")") == R"("dotted")");
  CHECK(t(R"("no tags at all")") == R"("no tags at all")");
  CHECK(t(R"("{{title}}{{title}}")") == R"("Disk fullDisk full")");
  CHECK(t(R"([[{{ "{{" }} literal]])") == R"("{{ literal")");
  // ctx-like tables with an __index work too.
  CHECK(eval(R"(local ctx = setmetatable({}, { __index = { run_id = "R1" } })
                return o.template("run {{run_id}}", ctx))") == R"("run R1")");
}

TEST_CASE("o.template renders numbers, booleans and tables predictably", "[stdlib][template]") {
  LuaEval eval;
  auto t = [&](const std::string& tmpl) {
    return eval(std::string(kData) + "local r = o.template(" + tmpl + ", data) return r");
  };
  CHECK(t(R"("{{count}} {{ratio}} {{big}} {{up}}")") == R"("3 0.25 1000000000000000 false")");
  CHECK(t(R"("{{tags}} {{nested}}")") == R"("[\"a\",\"b\"] {\"x\":1}")");
  CHECK(t(R"("{{ title | json }} {{ count | json }}")") == R"("\"Disk full\" 3")");
  CHECK(t(R"("{{ title | upper }} {{ title | lower }}")") == R"("DISK FULL disk full")");
  CHECK(eval(R"(return o.template("[{{ s | trim }}]", { s = "  x  " }))") == R"("[x]")");
  CHECK(eval(R"(return o.template("{{n}}", { n = 10 / 3 }))") == R"("3.3333333333333")");
  CHECK(eval(R"(return o.template("{{n}}", { n = -7.0 }))") == R"("-7")");
}

TEST_CASE("o.template defaults apply to missing and null values", "[stdlib][template]") {
  LuaEval eval;
  auto t = [&](const std::string& tmpl) {
    return eval(std::string(kData) + "local r = o.template(" + tmpl + ", data) return r");
  };
  CHECK(t(R"([[{{ alerts[2].labels.instance | default("unknown") }}]])") == R"("unknown")");
  CHECK(t(R"("{{ nothing | default('n/a') }}")") == R"("n/a")");
  CHECK(t(R"("{{ missing.deep.path | default(0) }}")") == R"("0")");
  CHECK(t(R"("{{ missing | default(true) }}")") == R"("true")");
  CHECK(t(R"([[{{ title | default("x") }}]])") == R"("Disk full")");
  CHECK(t(R"([[{{ alerts[2].labels.instance | default("n|a") | upper }}]])") == R"("N|A")");
  // Modes for what is missing.
  CHECK(eval(R"(return o.template("a{{x}}b", {}, { missing = "empty" }))") == R"("ab")");
  CHECK(eval(R"(return o.template("a{{ x }}b", {}, { missing = "keep" }))") == R"("a{{ x }}b")");
}

TEST_CASE("o.template errors name the missing key, the missing part and the position",
          "[stdlib][template]") {
  LuaEval eval;
  auto t = [&](const std::string& tmpl) {
    return eval(std::string(kData) + "local r = o.template(" + tmpl + ", data) return r");
  };
  // The error is raised at the caller's line (line 10 of eval.lua).
  CHECK(t(R"("Alert {{ alerts[2].labels.instance }}")") ==
        "error: eval.lua:10: o.template: missing key 'alerts[2].labels.instance' at line 1, "
        "column 7 ('instance' not found in 'alerts[2].labels'; add | default(\"...\") to allow "
        "it)");
  CHECK(contains(t(R"("line one\n  {{ nope }}")"),
                 "missing key 'nope' at line 2, column 3 ('nope' not found;"));
  CHECK(contains(t(R"("{{ alerts[5].labels }}")"), "('[5]' not found in 'alerts';"));
  CHECK(contains(t(R"("{{ title.x }}")"), "('title' is a string, not a table;"));
  CHECK(contains(t(R"("{{ nothing }}")"), "missing key 'nothing' at line 1, column 1"));
  CHECK(contains(t(R"("x {{ title")"), "o.template: unclosed '{{' at line 1, column 3"));
  CHECK(contains(t(R"("{{ }}")"), "bad expression {{ }} at line 1, column 1: expected a path"));
  CHECK(contains(t(R"("{{ title | shout }}")"),
                 "unknown filter 'shout' (known: default, json, upper, lower, trim)"));
  CHECK(contains(t(R"("{{ title | default }}")"), "default needs a value"));
  CHECK(contains(t(R"("{{ title | default(x) }}")"), "default(...) takes a \"string\""));
  CHECK(contains(t(R"("{{ a..b }}")"), "bad path 'a..b'"));
  CHECK(contains(eval("return o.template(42, {})"), "o.template: the template must be a string"));
  CHECK(contains(eval("return o.template('x', 'y')"), "o.template: data must be a table"));
  CHECK(contains(eval("return o.template('x', {}, { strict = 1 })"),
                 "unknown option 'strict' (known: missing)"));
  CHECK(contains(eval("return o.template('{{f}}', { f = print })"),
                 "cannot render {{f}} at line 1, column 1: the value is a function"));
}
