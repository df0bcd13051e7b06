// o.json (bindings/mod_core.cc, bindings/convert.cc): null, empty arrays, big integers,
// invalid UTF-8, decode errors as values, pretty output.
#include <catch2/catch.hpp>

#include "lua_eval.h"

using namespace orch;
using namespace orch::test;

TEST_CASE("o.json: null is o.json.null both ways and survives a round trip", "[stdlib][json]") {
  LuaEval eval;
  CHECK(eval(R"(return o.json.encode { a = o.json.null, b = { 1, o.json.null, 3 } })") ==
        R"("{\"a\":null,\"b\":[1,null,3]}")");
  CHECK(eval(R"(local v = o.json.decode('{"a":null,"b":[null,1]}')
                return { a_is_null = v.a == o.json.null, b1_is_null = v.b[1] == o.json.null,
                         n = #v.b, back = o.json.encode(v) })") ==
        R"({"a_is_null":true,"b1_is_null":true,"back":"{\"a\":null,\"b\":[null,1]}","n":2})");
  CHECK(eval("return { top = o.json.decode('null') == o.json.null }") == R"({"top":true})");
}

TEST_CASE("o.json: empty arrays stay arrays, empty tables are objects", "[stdlib][json]") {
  LuaEval eval;
  CHECK(eval("return o.json.encode(o.json.array {})") == R"("[]")");
  CHECK(eval("return o.json.encode(o.json.array())") == R"("[]")");
  CHECK(eval("return o.json.encode({})") == R"("{}")");
  CHECK(eval("return o.json.encode(o.json.decode('[]'))") == R"("[]")");
  CHECK(eval("return o.json.encode(o.json.decode('{}'))") == R"("{}")");
  CHECK(eval(R"(return o.json.encode(o.json.decode('{"a":[],"b":{},"c":[[]]}')))") ==
        R"("{\"a\":[],\"b\":{},\"c\":[[]]}")");
  // Filling a decoded empty array keeps it an array.
  CHECK(eval("local a = o.json.decode('[]'); a[1] = 'x'; return o.json.encode(a)") ==
        R"("[\"x\"]")");
}

TEST_CASE("o.json: integers beyond 2^53 decode as strings of their exact digits",
          "[stdlib][json]") {
  LuaEval eval;
  CHECK(eval("local v = o.json.decode('12345678901234567890') return { type(v), v }") ==
        R"(["string","12345678901234567890"])");
  CHECK(eval("local v = o.json.decode('-9007199254740993') return { type(v), v }") ==
        R"(["string","-9007199254740993"])");
  CHECK(eval("local v = o.json.decode('9007199254740993') return { type(v), v }") ==
        R"(["string","9007199254740993"])");
  // 2^53 itself and anything smaller is exact in a double: a number.
  CHECK(eval("local v = o.json.decode('9007199254740992') return { type(v), v == 2^53 }") ==
        R"(["number",true])");
  CHECK(eval("local v = o.json.decode('-42') return { type(v), v }") == R"(["number",-42])");
  // Even beyond 64 bits (where the parser itself would give an approximate float).
  CHECK(eval("local v = o.json.decode('[123456789012345678901234567890]') return { type(v[1]), "
             "v[1] }") == R"(["string","123456789012345678901234567890"])");
  CHECK(eval("local v = o.json.decode('-99999999999999999999999') return v") ==
        R"("-99999999999999999999999")");
  // Floats stay numbers, whatever their size.
  CHECK(eval("local v = o.json.decode('1e300') return { type(v), v > 1e299 }") ==
        R"(["number",true])");
  // A round trip keeps the digits (as a string, said in the README).
  CHECK(eval(R"(return o.json.encode(o.json.decode('{"id":12345678901234567890,"n":7}')))") ==
        R"("{\"id\":\"12345678901234567890\",\"n\":7}")");
  // Lua numbers beyond 2^53 encode as floats: their integer digits were never exact.
  CHECK(eval("return o.json.encode(2^53)") == R"("9007199254740992")");
  CHECK(eval("return o.json.encode(2^60)") == R"("1.152921504606847e+18")");
}

TEST_CASE("o.json.encode: invalid UTF-8 is an error naming the path", "[stdlib][json]") {
  LuaEval eval;
  CHECK(
      eval(
          R"(return o.json.encode { alerts = { { summary = "ok" }, { summary = "bad \255" } } })") ==
      "error: o.json.encode: value at alerts[2].summary: invalid UTF-8 in string (byte 5)");
  CHECK(eval(R"(return o.json.encode("\192\175"))") ==
        "error: o.json.encode: value: invalid UTF-8 in string (byte 1)");  // overlong '/'
  CHECK(eval(R"(return o.json.encode { x = "\237\160\128" })") ==
        "error: o.json.encode: value at x: invalid UTF-8 in string (byte 1)");  // a surrogate
  CHECK(eval(R"(return o.json.encode { x = "cut \226\156" })") ==
        "error: o.json.encode: value at x: invalid UTF-8 in string (byte 5)");  // truncated
  CHECK(eval(R"(return o.json.encode { ["k\255"] = 1 })") ==
        "error: o.json.encode: value: invalid UTF-8 in an object key");
  // Valid multi-byte text passes unchanged (not escaped).
  CHECK(eval(R"(return o.json.encode { s = "héllo ✓ 😀" })") == "\"{\\\"s\\\":\\\"héllo ✓ 😀\\\"}\"");
  // Node outputs keep the lenient rule: stored with U+FFFD rather than failing the node.
  CHECK(eval(R"(return { s = "bad \255" })") == "{\"s\":\"bad \xEF\xBF\xBD\"}");
}

TEST_CASE("o.json.decode: malformed text gives nil and line:col, never raises", "[stdlib][json]") {
  LuaEval eval;
  CHECK(
      eval(R"(return { o.json.decode('{"a" 1}') })") ==
      R"({"2":"1:6: syntax error while parsing object separator - unexpected number literal; expected ':'"})");
  // Line and column of the offending token on a later line.
  std::string r = eval(R"(return { o.json.decode('{\n  "a": 1,\n  "b": tru\n}') })");
  CHECK(contains(r, R"("2":"3:11: syntax error while parsing value - invalid literal)"));
  CHECK(contains(eval("return { o.json.decode('') }"), R"("2":"1:1: syntax error)"));
  CHECK(contains(eval("return { o.json.decode('[1] x') }"), R"("2":"1:5: syntax error)"));
  CHECK(contains(eval(R"(return { o.json.decode('"\255"') })"), R"("2":"1:2: syntax error)"));
  // Too deep for the converters: refused before parsing, with the position.
  CHECK(eval("return { o.json.decode(string.rep('[', 300)) }") ==
        R"({"2":"1:201: nested deeper than 200 levels"})");
  CHECK(eval("return { o.json.decode(string.rep('[', 150) .. string.rep(']', 150)) ~= nil }") ==
        "[true]");
  // Brackets inside strings do not count.
  CHECK(eval(R"(return o.json.decode('"' .. string.rep('[', 300) .. '"'):len())") == "300");
  // Misuse still raises.
  CHECK(contains(eval("return o.json.decode(nil)"), "bad argument #1"));
}

TEST_CASE("o.json.encode options: pretty, indent, sorted keys; unknown options raise",
          "[stdlib][json]") {
  LuaEval eval;
  CHECK(eval("return o.json.encode({ b = 1, a = { 1, 2 } }, { pretty = true })") ==
        R"("{\n  \"a\": [\n    1,\n    2\n  ],\n  \"b\": 1\n}")");
  CHECK(eval("return o.json.encode({ b = 1, a = 2 }, { indent = 4 })") ==
        R"("{\n    \"a\": 2,\n    \"b\": 1\n}")");
  CHECK(eval("return o.json.encode({ zz = 1, a = 2, m = 3 }, { sort_keys = true })") ==
        R"("{\"a\":2,\"m\":3,\"zz\":1}")");
  CHECK(eval("return o.json.encode({}, { sort_keys = false })") ==
        "error: o.json.encode: sort_keys = false is not supported (keys are always written in "
        "sorted order)");
  CHECK(eval("return o.json.encode({}, { pretyy = true })") ==
        "error: o.json.encode: unknown option 'pretyy' (known: pretty, indent, sort_keys)");
  CHECK(eval("return o.json.encode({}, 'pretty')") ==
        "error: o.json.encode: options must be a table, got string");
  CHECK(eval("return o.json.encode({ f = print })") ==
        "error: o.json.encode: value at f: cannot convert a function to JSON");
}
