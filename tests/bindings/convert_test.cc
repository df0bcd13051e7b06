// Lua values <-> JSON (bindings/convert.cc) on a plain Lua state, and what a node's return value
// turns into when a pipeline runs.
#include "bindings/convert.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <lua.hpp>

#include "base/json_util.h"
#include "test_util.h"

using namespace orch;
using namespace orch::test;

namespace {

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

// A bare Lua state with the converter's registry entries, plus globals `null` (the JSON null
// sentinel) and `array_mt` (what o.json.array sets) for building values in Lua.
struct State {
  lua_State* L;
  State() {
    L = luaL_newstate();
    luaL_openlibs(L);
    convert_init(L);
    lua_pushlightuserdata(L, nullptr);
    lua_setglobal(L, "null");
    push_array_mt(L);
    lua_setglobal(L, "array_mt");
  }
  ~State() { lua_close(L); }

  // Evaluates the Lua chunk `code` (which returns one value) and pushes its result.
  void push(const std::string& code) {
    INFO(code);
    int rc = luaL_dostring(L, code.c_str());
    INFO((rc ? lua_tostring(L, -1) : ""));
    REQUIRE(rc == 0);
    REQUIRE(lua_gettop(L) >= 1);
    lua_settop(L, 1);
  }

  struct Result {
    bool ok;
    json j;
    std::string err;
  };
  // Converts what `code` returns; checks that the conversion leaves the stack as it was.
  Result convert(const std::string& code) {
    lua_settop(L, 0);
    push(code);
    Result r;
    r.ok = lua_to_json(L, 1, &r.j, &r.err);
    INFO(code);
    CHECK(lua_gettop(L) == 1);
    lua_settop(L, 0);
    return r;
  }
  json ok(const std::string& code) {
    auto r = convert(code);
    INFO(code << " -> " << r.err);
    REQUIRE(r.ok);
    return r.j;
  }
  std::string fails(const std::string& code) {
    auto r = convert(code);
    INFO(code << " -> " << r.j.dump());
    REQUIRE_FALSE(r.ok);
    return r.err;
  }
  // Pushes `j`, stores it in the global `v` and runs the Lua assertions in `check`.
  void check_pushed(const json& j, const std::string& check) {
    lua_settop(L, 0);
    push_json(L, j);
    REQUIRE(lua_gettop(L) == 1);
    lua_setglobal(L, "v");
    int rc = luaL_dostring(L, check.c_str());
    INFO(j.dump() << ": " << check << " -> " << (rc ? lua_tostring(L, -1) : ""));
    CHECK(rc == 0);
    lua_settop(L, 0);
  }
};

}  // namespace

TEST_CASE("convert: objects, arrays and nesting", "[convert]") {
  State s;
  CHECK(s.ok("return { a = 1, b = 'two', c = true, d = false }") ==
        json{{"a", 1}, {"b", "two"}, {"c", true}, {"d", false}});
  CHECK(s.ok("return { 'x', 'y', 'z' }") == json{"x", "y", "z"});
  CHECK(s.ok("return { [2] = 'b', [1] = 'a' }") == json{"a", "b"});
  CHECK(s.ok("return { users = { { name = 'ann', tags = { 'a', 'b' } }, { name = 'bob', tags = {} "
             "} } }") ==
        json::parse(R"({"users":[{"name":"ann","tags":["a","b"]},{"name":"bob","tags":{}}]})"));
  // Not a sequence: an object with the keys as strings.
  CHECK(s.ok("return { 1, 2, x = 3 }") == json::parse(R"({"1":1,"2":2,"x":3})"));
  CHECK(s.ok("return { [1] = 'a', [3] = 'c' }") == json::parse(R"({"1":"a","3":"c"})"));
  CHECK(s.ok("return { [1.5] = 'x' }") == json::parse(R"({"1.5":"x"})"));
  CHECK(s.ok("return { [0] = 'zero' }") == json::parse(R"({"0":"zero"})"));
  // Strings are bytes, NULs included.
  CHECK(s.ok("return 'a\\0b'") == json(std::string("a\0b", 3)));
  // Scalars at the top.
  CHECK(s.ok("return 'hi'") == json("hi"));
  CHECK(s.ok("return nil") == json(nullptr));
  // The same table twice (not a cycle) is fine.
  CHECK(s.ok("local t = { 1 }; return { a = t, b = t, c = { t } }") ==
        json::parse(R"({"a":[1],"b":[1],"c":[[1]]})"));
}

TEST_CASE("convert: empty tables, array marking and null", "[convert]") {
  State s;
  json empty = s.ok("return {}");
  CHECK(empty.is_object());
  CHECK(empty.dump() == "{}");
  json arr = s.ok("return setmetatable({}, array_mt)");
  CHECK(arr.is_array());
  CHECK(arr.dump() == "[]");
  CHECK(s.ok("return { list = setmetatable({}, array_mt), obj = {} }").dump() ==
        R"({"list":[],"obj":{}})");
  // Another metatable does not make an array.
  CHECK(s.ok("return setmetatable({}, {})").dump() == "{}");
  // The null sentinel, at the top and inside.
  CHECK(s.ok("return null").is_null());
  CHECK(s.ok("return { a = null, b = { 1, null, 3 } }") ==
        json::parse(R"({"a":null,"b":[1,null,3]})"));
  // JSON null comes back as the sentinel (a NULL light userdata), not nil, so arrays keep
  // their length; arrays come back marked, so [] stays [].
  s.check_pushed(json::parse(R"({"a":null,"b":[1,null,3],"e":[],"o":{}})"),
                 "assert(v.a == null and type(v.a) == 'userdata')\n"
                 "assert(#v.b == 3 and v.b[2] == null and v.b[3] == 3)\n"
                 "assert(getmetatable(v.e) == array_mt and next(v.e) == nil)\n"
                 "assert(getmetatable(v.o) == nil and next(v.o) == nil)");
  lua_settop(s.L, 0);
  push_json(s.L, json::parse(R"({"a":null,"b":[1,null,3],"e":[],"o":{},"n":[[]]})"));
  json back;
  std::string err;
  REQUIRE(lua_to_json(s.L, 1, &back, &err));
  CHECK(back.dump() == R"({"a":null,"b":[1,null,3],"e":[],"n":[[]],"o":{}})");
  // Other light userdata are not null.
  lua_settop(s.L, 0);
  static int dummy;
  lua_pushlightuserdata(s.L, &dummy);
  json j;
  CHECK_FALSE(lua_to_json(s.L, 1, &j, &err));
  CHECK(contains(err, "cannot convert a userdata to JSON"));
}

TEST_CASE("convert: integers up to 2^53 stay integers, the rest are floats", "[convert]") {
  State s;
  json three = s.ok("return 3");
  CHECK(three.is_number_integer());
  CHECK(three.dump() == "3");
  json top = s.ok("return 2^53");
  CHECK(top.is_number_integer());
  CHECK(top.get<int64_t>() == 9007199254740992LL);
  CHECK(top.dump() == "9007199254740992");
  json neg = s.ok("return -2^53");
  CHECK(neg.is_number_integer());
  CHECK(neg.get<int64_t>() == -9007199254740992LL);
  json above = s.ok("return 2^53 + 2");
  CHECK(above.is_number_float());
  CHECK(above.get<double>() == 9007199254740994.0);
  CHECK(s.ok("return 2^63").is_number_float());
  CHECK(s.ok("return 1e300").is_number_float());
  json half = s.ok("return { x = 0.5, y = -2.25 }");
  CHECK(half["x"].is_number_float());
  CHECK(half.dump() == R"({"x":0.5,"y":-2.25})");
  // And back: integers up to 2^53 come out as exact Lua numbers; beyond, as strings of their
  // exact digits (a double would change them).
  s.check_pushed(
      json::parse(
          R"({"big":9007199254740992,"neg":-42,"f":0.1,"u":18446744073709551615,"i":-9007199254740993})"),
      "assert(v.big == 2^53 and v.neg == -42 and v.f == 0.1 and v.u == '18446744073709551615' "
      "and v.i == '-9007199254740993')");
}

TEST_CASE("convert: NaN and inf are rejected, naming the path", "[convert]") {
  State s;
  CHECK(s.fails("return { a = { b = { 1, 0/0 } } }") ==
        "value at a.b[2]: number is not finite (NaN or inf)");
  CHECK(s.fails("return { x = math.huge }") == "value at x: number is not finite (NaN or inf)");
  CHECK(s.fails("return { 1, 2, { y = -math.huge } }") ==
        "value at [3].y: number is not finite (NaN or inf)");
  CHECK(s.fails("return 0/0") == "value: number is not finite (NaN or inf)");
}

TEST_CASE("convert: functions, threads and userdata are rejected, naming the path", "[convert]") {
  State s;
  CHECK(s.fails("return { list = { 1, 2, { f = print } } }") ==
        "value at list[3].f: cannot convert a function to JSON");
  CHECK(s.fails("return function() end") == "value: cannot convert a function to JSON");
  CHECK(s.fails("return { co = coroutine.create(function() end) }") ==
        "value at co: cannot convert a thread to JSON");
  CHECK(s.fails("return { out = io.stdout }") == "value at out: cannot convert a userdata to JSON");
  // Keys that cannot be object keys.
  CHECK(s.fails("return { [true] = 1 }") ==
        "value: table key of type boolean cannot be a JSON object key");
  CHECK(s.fails("return { a = { [{}] = 1 } }") ==
        "value at a: table key of type table cannot be a JSON object key");
}

TEST_CASE("convert: cycles and excessive nesting are rejected", "[convert]") {
  State s;
  CHECK(s.fails("local t = {}; t.self = t; return t") == "value at self: table contains a cycle");
  CHECK(s.fails("local t = { 1 }; t[2] = t; return t") == "value at [2]: table contains a cycle");
  CHECK(s.fails("local a, b = {}, {}; a.b = b; b.list = { a }; return { root = a }") ==
        "value at root.b.list[1]: table contains a cycle");
  std::string deep =
      s.fails("local t = {}; local r = t; for i = 1, 300 do t.n = {}; t = t.n end; return r");
  CHECK(contains(deep, "nested too deeply"));
  CHECK(contains(deep, "value at n.n.n"));
  // Deep but within the limit is fine.
  json ok = s.ok("local t = {}; local r = t; for i = 1, 150 do t[1] = {}; t = t[1] end; return r");
  int depth = 0;
  for (const json* p = &ok; p->is_array() && !p->empty(); p = &(*p)[0]) depth++;
  CHECK(depth == 150);
}

TEST_CASE("convert: invalid UTF-8 does not throw when dumped", "[convert]") {
  State s;
  json j = s.ok("return { text = 'ok \\255\\254 done', [ '\\200key' ] = 1 }");
  CHECK(j["text"].get<std::string>() == "ok \xff\xfe done");
  CHECK_THROWS(j.dump());  // what dump_json protects against
  std::string out;
  REQUIRE_NOTHROW(out = dump_json(j));
  CHECK(contains(out, "ok \xEF\xBF\xBD\xEF\xBF\xBD done"));
  std::string err;
  json back = parse_json(out, &err);
  INFO(err);
  CHECK_FALSE(back.is_discarded());
}

TEST_CASE("convert: push_json builds the matching Lua values", "[convert]") {
  State s;
  s.check_pushed(
      json::parse(
          R"({"name":"x","n":3,"ok":true,"list":[1,"two",{"k":false}],"nested":{"a":{"b":[]}}})"),
      "assert(v.name == 'x' and v.n == 3 and v.ok == true)\n"
      "assert(#v.list == 3 and v.list[2] == 'two' and v.list[3].k == false)\n"
      "assert(getmetatable(v.list) == array_mt and getmetatable(v.nested) == nil)\n"
      "assert(#v.nested.a.b == 0)");
  s.check_pushed(json(std::string("a\0b", 3)), "assert(v == 'a\\0b' and #v == 3)");
  s.check_pushed(json(2.5), "assert(v == 2.5)");
  s.check_pushed(json(nullptr), "assert(v == null and type(v) == 'userdata')");
  // Round trip.
  json doc = json::parse(R"({"a":[1,2.5,"x",null,true,[],{}],"b":{"c":{"d":[{"e":-7}]}}})");
  lua_settop(s.L, 0);
  push_json(s.L, doc);
  json back;
  std::string err;
  REQUIRE(lua_to_json(s.L, 1, &back, &err));
  CHECK(back == doc);
}

TEST_CASE("convert: a node's output must be a table that converts", "[convert]") {
  Harness h;
  auto fn = h.run(R"(local o = require "orch"
return o.pipeline "fn" {
  o.node("a", function() return { ok = 1, nested = { cb = function() end } } end),
})");
  CHECK(fn.status == "failed");
  CHECK(fn.error_type == "bad_output");
  CHECK(fn.error_node == "a");
  CHECK(contains(fn.error_message, "value at nested.cb: cannot convert a function to JSON"));

  auto str = h.run(R"(local o = require "orch"
return o.pipeline "str" {
  o.node("a", function() return "done" end),
})");
  CHECK(str.status == "failed");
  CHECK(str.error_type == "bad_output");
  CHECK(contains(str.error_message, "node must return a table (or nothing), got string"));

  auto nan = h.run(R"(local o = require "orch"
return o.pipeline "nan" {
  o.node("a", function() return { ratio = 0/0 } end),
})");
  CHECK(nan.status == "failed");
  CHECK(nan.error_type == "bad_output");
  CHECK(contains(nan.error_message, "value at ratio: number is not finite"));

  auto none = h.run(R"(local o = require "orch"
return o.pipeline "none" {
  o.node("a", function() end),
  o.node("b", function(ctx, input)
    return { input_was_table = type(input) == "table" and next(input) == nil,
             list = o.json.array(), null = o.json.null }
  end),
})");
  CHECK(none.status == "succeeded");
  CHECK(query_str(h.db_path, "select output from node_runs where run_id='" + none.run_id +
                                 "' and node_id='a'") == "{}");
  CHECK(none.output_json == R"({"input_was_table":true,"list":[],"null":null})");
  CHECK(h.close().empty());
}
