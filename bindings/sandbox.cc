// The environment pipeline code runs in (after Redis's scripting sandbox): a fresh globals
// table holding an allow-list of builtins; reading an unknown global or creating a new one
// raises with the file and line. Left out unless the operator allows them: io, os.execute and
// the rest of os, ffi, debug, package.loadlib, bytecode loading, getfenv/setfenv (which would
// hand out the stdlib's unrestricted environment).
#include <string>

#include "bindings/lua_state.h"

namespace orch {
namespace {

const char kSandboxLua[] = R"lua(
local allow = ...
local G = _G
local env = {}

local function copy(t, except)
  local c = {}
  for k, v in pairs(t) do if not (except and except[k]) then c[k] = v end end
  return c
end

for _, name in ipairs { "assert", "error", "ipairs", "next", "pairs", "pcall", "select",
                        "tonumber", "tostring", "type", "unpack", "xpcall", "rawequal",
                        "rawget", "rawlen", "setmetatable", "getmetatable", "_VERSION" } do
  env[name] = G[name]
end
env.string = copy(string, { dump = true })
env.table = copy(table)
env.math = copy(math)
env.coroutine = copy(coroutine)

-- The deadline hook stops a node that runs past its timeout by raising an error; pcall,
-- xpcall and coroutine.resume must not swallow it, or `while true do pcall(f) end` would spin
-- forever (the loop thread never gets back to the scheduler). They pass it on instead. The
-- same holds for a condition's deadline and a pipeline file's load limit (lua_state.cc), and
-- for Ctrl-C / SIGTERM.
local STOPS = { "node ran past its deadline without yielding", "condition ran past its deadline",
                "loading took longer than", "interrupted by SIG" }
local find, type_ = string.find, type  -- captured: pipeline code cannot replace them here
local function is_deadline(e)
  if type_(e) ~= "string" then return false end
  for i = 1, #STOPS do
    if find(e, STOPS[i], 1, true) ~= nil then return true end
  end
  return false
end
local function pass_deadline(ok, ...)
  if not ok and is_deadline((...)) then error((...), 0) end
  return ok, ...
end
-- (Locals named like the originals, so that argument errors still name them.)
local pcall, xpcall, resume = pcall, xpcall, coroutine.resume
env.pcall = function(f, ...) return pass_deadline(pcall(f, ...)) end
env.xpcall = function(f, handler, ...)
  if type(handler) ~= "function" then return pass_deadline(xpcall(f, handler, ...)) end
  return pass_deadline(xpcall(f, function(e)
    if is_deadline(e) then return e end
    return handler(e)
  end, ...))
end
env.coroutine.resume = function(co, ...) return pass_deadline(resume(co, ...)) end
env.bit = copy(bit)
env.os = { time = os.time, clock = os.clock, date = os.date, difftime = os.difftime }

local orch = require "orch"
env.print = function(...)
  local parts = {}
  for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
  orch.log.info(table.concat(parts, "\t"))
end

-- Text-only loading, in the sandbox.
local function load_text(chunk, name, mode, fenv)
  return load(chunk, name, "t", fenv or env)
end
env.load = load_text
env.loadstring = function(s, name) return load_text(s, name) end

local embedded = {}
for name in pairs(package.preload) do
  if name:match("^orch") and not name:match("%._") then embedded[name] = true end
end
env.require = function(name)
  if type(name) ~= "string" then error("require expects a module name", 2) end
  if embedded[name] then return require(name) end
  if name == "ffi" and allow.ffi then return require("ffi") end
  local names = {}
  for n in pairs(embedded) do names[#names + 1] = n end
  table.sort(names)
  error(("module '%s' is not available to pipelines (available: %s)")
        :format(name, table.concat(names, ", ")), 2)
end

if allow.io then env.io = io end
if allow.os then env.os = os end
if allow.debug then env.debug = debug end
if allow.ffi then env.ffi = require("ffi") end

env._G = env
return setmetatable(env, {
  __index = function(_, k)
    error(("unknown global '%s'"):format(tostring(k)), 2)
  end,
  __newindex = function(_, k)
    error(("assignment to undeclared global '%s' (declare it with 'local')"):format(tostring(k)), 2)
  end,
  __metatable = false,
})
)lua";

}  // namespace

void push_sandbox_env(lua_State* L, const SandboxOptions& opts) {
  if (luaL_loadbuffer(L, kSandboxLua, sizeof(kSandboxLua) - 1, "=[orch sandbox]") != 0)
    lua_error(L);
  lua_createtable(L, 0, 4);
  lua_pushboolean(L, opts.allow_io);
  lua_setfield(L, -2, "io");
  lua_pushboolean(L, opts.allow_os);
  lua_setfield(L, -2, "os");
  lua_pushboolean(L, opts.allow_ffi);
  lua_setfield(L, -2, "ffi");
  lua_pushboolean(L, opts.allow_debug);
  lua_setfield(L, -2, "debug");
  lua_call(L, 1, 1);
}

}  // namespace orch
