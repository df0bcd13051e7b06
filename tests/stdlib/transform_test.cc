// o.transform (stdlib/orch/transform.lua): paths, reshaping lists, and misuse errors.
#include <catch2/catch.hpp>

#include "lua_eval.h"

using namespace orch;
using namespace orch::test;

namespace {

const char kAlerts[] = R"(
  local alerts = o.json.decode [[ [
    {"name": "DiskFull", "status": "firing", "labels": {"severity": "critical", "host": "db1"}, "value": 97},
    {"name": "HighLoad", "status": "resolved", "labels": {"severity": "warning", "host": "web1"}, "value": 3.5},
    {"name": "DiskFull", "status": "firing", "labels": {"severity": "critical", "host": "db2"}, "value": 91},
    {"name": "Latency", "status": "firing", "labels": {"severity": "warning", "host": "web2"}, "value": null}
  ] ]]
)";

}  // namespace

TEST_CASE("o.transform.get follows paths and gives the default for missing or null values",
          "[stdlib][transform]") {
  LuaEval eval;
  auto r = [&](const std::string& body) { return eval(std::string(kAlerts) + body); };
  CHECK(r("return { o.transform.get(alerts, '[1].labels.host') }") == R"(["db1"])");
  CHECK(r("return { o.transform.get({ a = alerts }, 'a[3].labels.host') }") == R"(["db2"])");
  CHECK(r("return { o.transform.get({ a = alerts }, 'a.2.name') }") == R"(["HighLoad"])");
  CHECK(r("return { o.transform.get(alerts, '[-1].name') }") == R"(["Latency"])");
  CHECK(r("return { o.transform.get({ ['a.b'] = 1 }, '[\"a.b\"]') }") == R"([1])");
  CHECK(r("return { o.transform.get({ ['1'] = 'str' , 'int' }, '1') }") == R"(["str"])");
  CHECK(r("return { o.transform.get(alerts, '[9].name', 'none') }") == R"(["none"])");
  CHECK(r("return { o.transform.get(alerts, '[4].value', 0) }") == R"([0])");  // null
  CHECK(r("return { o.transform.get(alerts, '[1].name.x', 'no') }") == R"(["no"])");
  CHECK(r("return { o.transform.get(nil, 'a', 'd') }") == R"(["d"])");
  CHECK(r("return { x = o.transform.get(alerts, '[9]') }") == "{}");
  // A bad path is a mistake in the code: it raises, naming the function and the column.
  CHECK(r("local v = o.transform.get(alerts, 'a..b') return v") ==
        "error: eval.lua:9: o.transform.get: bad path 'a..b': expected a key at column 3");
  CHECK(contains(r("return o.transform.get(alerts, '[0]')"),
                 "bad path '[0]': index [0] at column 1 (indexes start at 1)"));
  CHECK(contains(r("return o.transform.get(alerts, 'a[x]')"),
                 "expected [number] or [\"key\"] at column 2"));
  CHECK(contains(r("return o.transform.get(alerts, 7)"),
                 "o.transform.get: path must be a string, got number"));
}

TEST_CASE("o.transform.pick and extract build new tables from paths", "[stdlib][transform]") {
  LuaEval eval;
  auto r = [&](const std::string& body) { return eval(std::string(kAlerts) + body); };
  CHECK(r("return o.transform.pick(alerts[1], { 'name', 'labels.host', 'missing.x' })") ==
        R"({"labels":{"host":"db1"},"name":"DiskFull"})");
  CHECK(r(R"(return o.transform.extract(alerts[1], {
               host = "labels.host", sev = { "labels.severity" },
               team = { "labels.team", default = "ops" }, gone = "labels.nope",
               loud = function(a) return a.name:upper() end }))") ==
        R"({"host":"db1","loud":"DISKFULL","sev":"critical","team":"ops"})");
  CHECK(contains(r("return o.transform.extract(alerts[1], { x = 5 })"),
                 "o.transform.extract: 'x' must be a path, { path, default = ... } or a "
                 "function, got number"));
  CHECK(contains(r("return o.transform.pick(alerts[1], 'name')"),
                 "o.transform.pick: expected a list of paths, got string"));
}

TEST_CASE("o.transform.filter, find and map", "[stdlib][transform]") {
  LuaEval eval;
  auto r = [&](const std::string& body) { return eval(std::string(kAlerts) + body); };
  CHECK(r("return o.transform.map(o.transform.filter(alerts, function(a) return a.status == "
          "'firing' end), 'labels.host')") == R"(["db1","db2","web2"])");
  CHECK(r("return o.transform.map(o.transform.filter(alerts, { status = 'firing', "
          "['labels.severity'] = 'critical' }), 'labels.host')") == R"(["db1","db2"])");
  // Index passed along; nil results are dropped.
  CHECK(r("return o.transform.map(alerts, function(a, i) if a.value ~= o.json.null then return "
          "i .. ':' .. a.value end end)") == R"(["1:97","2:3.5","3:91"])");
  // An empty result is still an array.
  CHECK(r("return o.transform.filter(alerts, { status = 'nope' })") == "[]");
  CHECK(r("return o.transform.map({}, 'x')") == "[]");
  CHECK(
      r("return { o.transform.find(alerts, { name = 'DiskFull' }) ~= nil, "
        "select(2, o.transform.find(alerts, function(a) return a.labels.host == 'web1' end)) }") ==
      R"([true,2])");
  CHECK(r("return { o.transform.find(alerts, { name = 'x' }) }") == "{}");
  CHECK(contains(r("return o.transform.map(nil, 'x')"),
                 "o.transform.map: expected a list (table), got nil"));
  CHECK(contains(r("return o.transform.filter(alerts, 5)"),
                 "o.transform.filter: expected a function or a table of path = value, got number"));
  CHECK(contains(r("return o.transform.map(alerts, 5)"),
                 "o.transform.map: expected a function or a path string, got number"));
}

TEST_CASE("o.transform.group_by, count_by and sort_by", "[stdlib][transform]") {
  LuaEval eval;
  auto r = [&](const std::string& body) { return eval(std::string(kAlerts) + body); };
  CHECK(r("local g = o.transform.group_by(alerts, 'labels.severity') "
          "return { critical = o.transform.map(g.critical, 'labels.host'), "
          "warning = o.transform.map(g.warning, 'labels.host') }") ==
        R"({"critical":["db1","db2"],"warning":["web1","web2"]})");
  CHECK(r("return o.transform.count_by(alerts, 'name')") ==
        R"({"DiskFull":2,"HighLoad":1,"Latency":1})");
  CHECK(r("return o.transform.count_by(alerts, function(a) return a.status == 'firing' end)") ==
        R"({"false":1,"true":3})");
  // Missing keys last, stable among equals, descending on request.
  CHECK(r("return o.transform.map(o.transform.sort_by(alerts, 'value'), 'labels.host')") ==
        R"(["web1","db2","db1","web2"])");
  CHECK(r("return o.transform.map(o.transform.sort_by(alerts, 'value', { desc = true }), "
          "'labels.host')") == R"(["db1","db2","web1","web2"])");
  CHECK(
      r("return o.transform.map(o.transform.sort_by(alerts, 'labels.severity'), 'labels.host')") ==
      R"(["db1","db2","web1","web2"])");
  CHECK(r("return o.transform.sort_by({ 'b', 2, 'a', 1, true }, function(x) return x end)") ==
        R"([1,2,"a","b",true])");
  // The input list is left as it was.
  CHECK(r("o.transform.sort_by(alerts, 'value') return o.transform.map(alerts, 'labels.host')") ==
        R"(["db1","web1","db2","web2"])");
  CHECK(r("return o.transform.sort_by({}, 'x')") == "[]");
}
