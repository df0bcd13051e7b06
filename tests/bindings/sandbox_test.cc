// The sandbox pipeline code runs in (bindings/sandbox.cc): no way out to the process (os.execute,
// io, ffi, debug, package, getfenv/setfenv, bytecode), strict globals with file:line errors,
// only the embedded modules for require, and opt-in libraries.
#include <catch2/catch.hpp>
#include <lua.hpp>

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

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

// A pipeline whose line 2 is `stmt`; line 3 returns a valid pipeline.
std::string with_line2(const std::string& stmt) {
  return "local o = require \"orch\"\n" + stmt +
         "\nreturn o.pipeline \"p\" { o.node(\"a\", function() return {} end) }\n";
}

void expect_error_at_line2(const std::string& stmt, const std::string& text,
                           const SandboxOptions& sb = {}) {
  INFO("statement: " << stmt);
  auto d = Harness::diagnose(with_line2(stmt), sb);
  INFO(all_of(d));
  REQUIRE(d.size() == 1);
  CHECK(d[0].file == "test.lua");
  CHECK(d[0].line == 2);
  CHECK(contains(d[0].message, text));
}

void expect_ok(const std::string& stmt, const SandboxOptions& sb = {}) {
  INFO("statement: " << stmt);
  auto d = Harness::diagnose(with_line2(stmt), sb);
  INFO(all_of(d));
  CHECK(d.empty());
}

// `fn` compiled to LuaJIT bytecode, written as a Lua string literal with decimal escapes.
std::string bytecode_literal(const char* fn_source) {
  lua_State* L = luaL_newstate();
  luaL_openlibs(L);
  std::string code = std::string("return string.dump(") + fn_source + ")";
  REQUIRE(luaL_dostring(L, code.c_str()) == 0);
  size_t n = 0;
  const char* bc = lua_tolstring(L, -1, &n);
  REQUIRE(n > 4);
  REQUIRE(bc[0] == '\x1b');
  std::string lit = "\"";
  for (size_t i = 0; i < n; i++) lit += "\\" + std::to_string(static_cast<unsigned char>(bc[i]));
  lit += "\"";
  lua_close(L);
  return lit;
}

}  // namespace

TEST_CASE("sandbox: no process, file or native access by default", "[sandbox]") {
  // os keeps only the harmless clock functions.
  expect_error_at_line2("os.execute(\"touch /tmp/orchrun-sandbox-pwned\")",
                        "attempt to call field 'execute' (a nil value)");
  expect_error_at_line2("os.exit(1)", "attempt to call field 'exit' (a nil value)");
  expect_error_at_line2("os.remove(\"/tmp/x\")", "attempt to call field 'remove' (a nil value)");
  expect_error_at_line2("local v = os.getenv(\"HOME\")", "attempt to call field 'getenv'");
  expect_ok(
      "assert(type(os.time()) == 'number' and type(os.clock()) == 'number' and "
      "type(os.date('%Y')) == 'string')");
  // io does not exist at all.
  expect_error_at_line2("local f = io.open(\"/etc/passwd\")", "unknown global 'io'");
  expect_error_at_line2("local p = io.popen(\"id\")", "unknown global 'io'");
  // Nor do ffi, debug, package, the environment functions, jit.
  expect_error_at_line2("local ffi = require \"ffi\"",
                        "module 'ffi' is not available to pipelines");
  expect_error_at_line2("local ffi = ffi", "unknown global 'ffi'");
  expect_error_at_line2("local info = debug.getinfo(1)", "unknown global 'debug'");
  expect_error_at_line2("local f = package.loadlib(\"libc.so.6\", \"system\")",
                        "unknown global 'package'");
  expect_error_at_line2("local e = getfenv(1)", "unknown global 'getfenv'");
  expect_error_at_line2("setfenv(1, {})", "unknown global 'setfenv'");
  expect_error_at_line2("local j = jit.version", "unknown global 'jit'");
  expect_error_at_line2("collectgarbage()", "unknown global 'collectgarbage'");
  expect_error_at_line2("local m = module", "unknown global 'module'");
  expect_error_at_line2("dofile(\"/etc/passwd\")", "unknown global 'dofile'");
  expect_error_at_line2("loadfile(\"/etc/passwd\")", "unknown global 'loadfile'");
  expect_error_at_line2("rawset(_G, 'io', 1)", "unknown global 'rawset'");
  // string.dump is gone everywhere, also through the string metatable.
  expect_error_at_line2("local s = string.dump(function() end)",
                        "attempt to call field 'dump' (a nil value)");
  // The shared string metatable is hidden, so the real string library cannot be reached.
  expect_ok("assert(getmetatable('') == false, 'string metatable is hidden')");
  expect_ok("assert(('').dump == nil, 'dump through string methods')");
  // The globals table cannot be unlocked.
  expect_ok("assert(getmetatable(_G) == false and rawget(_G, 'io') == nil)");
  expect_error_at_line2("setmetatable(_G, nil)", "cannot change a protected metatable");
}

TEST_CASE("sandbox: bytecode cannot be loaded, only text", "[sandbox]") {
  const std::string bc = bytecode_literal("function() return 42 end");
  for (const char* loader : {"load", "loadstring"}) {
    INFO(loader);
    const std::string src = std::string("local o = require \"orch\"\n") +
                            "local f, err = " + loader + "(" + bc + ")\n" +
                            "if f then error(\"bytecode was loaded\") end\n" +
                            "error(\"refused: \" .. tostring(err))\n" +
                            "return o.pipeline \"p\" { o.node(\"a\", function() return {} end) }\n";
    auto d = Harness::diagnose(src);
    INFO(all_of(d));
    REQUIRE(d.size() == 1);
    CHECK(d[0].line == 4);
    CHECK(contains(d[0].message, "refused: "));
    CHECK(contains(d[0].message, "mode"));
  }
  // A reader function handing out bytecode piecewise is refused too; and the mode argument
  // cannot be used to ask for binary.
  const std::string src = std::string("local o = require \"orch\"\n") + "local bc, done = " + bc +
                          ", false\n" +
                          "local f = load(function() if done then return nil end done = true "
                          "return bc end, \"x\", \"b\")\n" +
                          "assert(f == nil, \"bytecode was loaded\")\n" +
                          "return o.pipeline \"p\" { o.node(\"a\", function() return {} end) }\n";
  auto d = Harness::diagnose(src);
  INFO(all_of(d));
  CHECK(d.empty());
  // Text still loads, in the sandbox (strict globals apply inside).
  expect_ok("local f = assert(load('return 1 + 1')); assert(f() == 2)");
  expect_ok("local f = assert(loadstring('return 40 + 2')); assert(f() == 42)");
  {
    // An error inside loaded text is located in that chunk.
    auto d = Harness::diagnose(with_line2("local f = assert(load('return io')); f()"));
    INFO(all_of(d));
    REQUIRE(d.size() == 1);
    CHECK(d[0].line == 0);
    CHECK(contains(d[0].message, "[string \"return io\"]:1: unknown global 'io'"));
  }
  // The file itself may not be bytecode.
  std::string file_bc;
  {
    lua_State* L = luaL_newstate();
    luaL_openlibs(L);
    REQUIRE(luaL_dostring(L, "return string.dump(function() return 1 end)") == 0);
    size_t n = 0;
    const char* s = lua_tolstring(L, -1, &n);
    file_bc.assign(s, n);
    lua_close(L);
  }
  auto fd = Harness::diagnose(file_bc);
  INFO(all_of(fd));
  REQUIRE(fd.size() == 1);
  CHECK(fd[0].file == "test.lua");
  CHECK(contains(fd[0].message, "precompiled bytecode is not accepted"));
}

TEST_CASE("sandbox: strict globals, with file:line", "[sandbox]") {
  const std::string src = R"(local o = require "orch"
local ok = 1

local y = undefined_thing
return o.pipeline "p" { o.node("a", function() return {} end) }
)";
  auto d = Harness::diagnose(src);
  INFO(all_of(d));
  REQUIRE(d.size() == 1);
  CHECK(d[0].file == "test.lua");
  CHECK(d[0].line == 4);
  CHECK(d[0].message == "unknown global 'undefined_thing'");

  expect_error_at_line2("counter = 1",
                        "assignment to undeclared global 'counter' (declare it with 'local')");
  expect_error_at_line2("function helper() end", "assignment to undeclared global 'helper'");
  // Overwriting an existing global is allowed (it is the pipeline's own table).
  expect_ok("tostring = tostring");
  // A typo'd library name is an unknown global too, not a nil.
  expect_error_at_line2("local t = strng.format('%d', 1)", "unknown global 'strng'");
}

TEST_CASE("sandbox: strict globals inside a node body at run time", "[sandbox]") {
  Harness h;
  auto s = h.run(R"(local o = require "orch"
return o.pipeline "p" {
  o.node("a", function()
    return { v = not_defined }
  end),
})");
  CHECK(s.status == "failed");
  CHECK(s.error_node == "a");
  CHECK(contains(s.error_message, "test.lua:4: unknown global 'not_defined'"));
  CHECK(h.close().empty());
}

TEST_CASE("sandbox: require gives the embedded modules only", "[sandbox]") {
  expect_ok("local o2 = require 'orch'; assert(o2 == o and type(o2.node) == 'function')");
  expect_ok("local core = require 'orch.core'; assert(type(core.version) == 'string')");
  expect_error_at_line2(
      "local socket = require \"socket\"",
      "module 'socket' is not available to pipelines (available: orch, orch.ai, orch.core, "
      "orch.ingest, orch.jsondef, orch.notify, orch.template, orch.transform)");
  expect_error_at_line2("local j = require \"jit\"", "module 'jit' is not available");
  expect_error_at_line2("local s = require \"string\"", "module 'string' is not available");
  expect_error_at_line2("local x = require(42)", "require expects a module name");
}

TEST_CASE("sandbox: io, os, ffi and debug when the operator allows them", "[sandbox]") {
  SandboxOptions io;
  io.allow_io = true;
  expect_ok(
      "local f = assert(io.open('/dev/null', 'r')); f:close(); assert(type(io.popen) == "
      "'function')",
      io);
  expect_error_at_line2("os.execute('true')", "attempt to call field 'execute'", io);

  SandboxOptions os;
  os.allow_os = true;
  expect_ok("assert(type(os.execute) == 'function' and type(os.getenv) == 'function')", os);
  expect_error_at_line2("local f = io.open('/dev/null')", "unknown global 'io'", os);

  SandboxOptions ffi;
  ffi.allow_ffi = true;
  expect_ok("local f = require 'ffi'; assert(f == ffi and type(f.cdef) == 'function')", ffi);

  SandboxOptions dbg;
  dbg.allow_debug = true;
  expect_ok("assert(type(debug.getinfo) == 'function')", dbg);
  expect_error_at_line2("local f = require 'ffi'", "module 'ffi' is not available", dbg);
}

TEST_CASE("sandbox: async calls outside a node body raise a clear error", "[sandbox]") {
  expect_error_at_line2("o.sleep(0.01)",
                        "o.sleep can only be called inside a node body while the pipeline runs");
  expect_error_at_line2("o.fs.read('/etc/hostname')",
                        "o.fs.read can only be called inside a node body");
  // o.exec is a Lua wrapper around the C call; the error must still name the user's line.
  expect_error_at_line2("o.exec { 'true' }", "o.exec can only be called inside a node body");
  expect_error_at_line2("local r = o.exec 'echo hi'",
                        "o.exec can only be called inside a node body");
}

TEST_CASE("sandbox: a node that loops without yielding is stopped by its timeout", "[sandbox]") {
  Harness h;
  auto s = h.run(R"(local o = require "orch"
return o.pipeline "spin" {
  o.node("spin", function()
    local n = 0
    while true do n = n + 1 end
  end, { timeout = "200ms" }),
  o.node("after", function() return {} end),
})");
  INFO(s.error_message);
  CHECK(s.status == "failed");
  CHECK(s.error_type == "timeout");
  CHECK(s.error_node == "spin");
  CHECK(contains(s.error_message, "timed out after 200ms"));
  CHECK(h.last_seconds >= 0.19);
  CHECK(h.last_seconds < 2.0);
  CHECK(query_str(h.db_path, "select count(*) from node_runs where node_id='after'") == "0");
  CHECK(h.close().empty());
}

// Each body catches the deadline error in a different way and would spin again; without the
// sandbox passing the error on, the loop thread would never get back to the scheduler. The
// outer loops give up after 3 s of CPU so that a regression fails instead of hanging.
TEST_CASE("sandbox: pcall, xpcall and coroutine.resume cannot swallow the timeout", "[sandbox]") {
  const char* bodies[] = {
      "local spin = function() while true do end end\n"
      "    while os.clock() < give_up do pcall(spin) end",
      "local spin = function() while true do end end\n"
      "    while os.clock() < give_up do xpcall(spin, function(e) return 'swallowed' end) end",
      "local spin = function() while true do end end\n"
      "    while os.clock() < give_up do coroutine.resume(coroutine.create(spin)) end",
      "local spin = function() while true do end end\n"
      "    while os.clock() < give_up do pcall(pcall, spin) end",
  };
  for (const char* body : bodies) {
    Harness h;
    std::string src = std::string("local o = require \"orch\"\n") +
                      "return o.pipeline \"spin\" {\n"
                      "  o.node(\"spin\", function()\n"
                      "    local give_up = os.clock() + 3\n"
                      "    " +
                      body +
                      "\n"
                      "    return { escaped = true }\n"
                      "  end, { timeout = \"200ms\" }),\n"
                      "}\n";
    INFO(src);
    auto s = h.run(src);
    INFO(s.status << " " << s.error_type << ": " << s.error_message);
    CHECK(s.status == "failed");
    CHECK(s.error_type == "timeout");
    CHECK(h.last_seconds < 2.0);
    CHECK(h.close().empty());
  }
}

TEST_CASE("sandbox: pcall, xpcall and coroutines still work as usual in node bodies", "[sandbox]") {
  Harness h;
  auto s = h.run(R"(local o = require "orch"
return o.pipeline "p" {
  o.node("a", function()
    local ok1, e1 = pcall(error, "plain")
    local ok2, e2 = pcall(o.fail, "structured", { type = "mine" })
    local ok3, e3 = xpcall(function() error("x", 0) end, function(e) return "handled " .. e end)
    local ok4, a, b = pcall(function(x, y) return x + y, "two" end, 40, 2)
    local ok5, e5 = pcall(function() o.sleep("20ms"); error("after sleep", 0) end)
    local co = coroutine.create(function(v) local w = coroutine.yield(v + 1); return w * 2 end)
    local _, first = coroutine.resume(co, 1)
    local _, second = coroutine.resume(co, 10)
    local ok6, e6 = coroutine.resume(coroutine.create(function() error("in co", 0) end))
    local ok7, e7 = pcall(xpcall, function() end, nil)
    return { ok1 = ok1, e1 = e1, ok2 = ok2, e2type = e2.type, ok3 = ok3, e3 = e3, ok4 = ok4,
             a = a, b = b, ok5 = ok5, e5 = e5, first = first, second = second, ok6 = ok6,
             e6 = e6, ok7 = ok7, e7 = e7 }
  end, { timeout = "5s" }),
})");
  INFO(s.error_message);
  REQUIRE(s.status == "succeeded");
  auto out = parse_json(s.output_json, nullptr);
  CHECK(out["ok1"] == false);
  CHECK(out["e1"] == "plain");
  CHECK(out["ok2"] == false);
  CHECK(out["e2type"] == "mine");
  CHECK(out["ok3"] == false);
  CHECK(out["e3"] == "handled x");
  CHECK(out["ok4"] == true);
  CHECK(out["a"] == 42);
  CHECK(out["b"] == "two");
  CHECK(out["ok5"] == false);
  CHECK(out["e5"] == "after sleep");
  CHECK(out["first"] == 2);
  CHECK(out["second"] == 20);
  CHECK(out["ok6"] == false);
  CHECK(out["e6"] == "in co");
  CHECK(out["ok7"] == false);
  CHECK(contains(out["e7"].get<std::string>(), "bad argument #2 to 'xpcall'"));
  CHECK(h.close().empty());
}
