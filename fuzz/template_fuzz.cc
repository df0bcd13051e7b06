// o.template (stdlib/orch/template.lua, with o.transform's paths) through a pipeline's Lua
// state, bounded by an instruction budget.
//
// Input: "<template>\0<data as JSON>\0<missing mode>"; the data defaults to a small alert
// (tests/fixtures shape), the mode to "error" (also "empty", "keep", or anything, refused).
//
// Invariants: no crash; o.template returns a string or raises a string naming what is wrong
// ("o.template: ..."), never an internal error object or a Lua runtime error of its own
// ("attempt to index a nil value" and the like).
#include <string>

#include "bindings/lua_state.h"
#include "fuzz/fuzz_util.h"

using namespace orch;
using orch::fuzz::fail;

namespace {

const char kDefaultData[] = R"({"alert":{"labels":{"severity":"critical","instance":"db-1"},
  "annotations":{"summary":"Disk {{full}}"},"values":[1,2.5,null,true,"x"]},
  "alerts":[{"labels":{"instance":"a"}},{"labels":{"instance":"b"}}],"n":null,"e":{}})";

const char kChunk[] = R"(
  local o = require "orch"
  local tpl, data_json, mode = ...
  local data = o.json.decode(data_json)
  if type(data) ~= "table" then data = {} end
  local opts = mode ~= "" and { missing = mode } or nil
  local ok, res = pcall(o.template, tpl, data, opts)
  if ok then
    if type(res) ~= "string" then return "bad", "returned a " .. type(res) end
    return "ok", res
  end
  if type(res) ~= "string" then return "bad", "raised a " .. type(res) end
  if res:find("o.template: ", 1, true) == nil then return "bad", "raised: " .. res end
  return "error", res
)";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in = orch::fuzz::bytes(data, size);
  auto next_part = [&in] {
    size_t z = in.find('\0');
    std::string part(in.substr(0, z));
    in = z == std::string_view::npos ? std::string_view() : in.substr(z + 1);
    return part;
  };
  const std::string tpl = next_part();
  std::string data_json = next_part();
  const std::string mode = next_part();
  if (data_json.empty()) data_json = kDefaultData;

  lua_State* L = orch::fuzz::shared_engine().L();
  int top = lua_gettop(L);
  if (luaL_loadbuffer(L, kChunk, sizeof kChunk - 1, "=template_fuzz") != 0)
    fail(std::string("loading the chunk: ") + lua_tostring(L, -1));
  lua_pushlstring(L, tpl.data(), tpl.size());
  lua_pushlstring(L, data_json.data(), data_json.size());
  lua_pushlstring(L, mode.data(), mode.size());
  int rc = orch::fuzz::pcall_bounded(L, 3, 2, 20000);
  std::string msg = lua_tostring(L, -1) ? lua_tostring(L, -1) : "";
  if (rc != 0) {
    // The budget ran out: a template that takes over 20 M instructions is a finding too.
    fail("o.template did not finish: " + msg);
  }
  std::string status = lua_tostring(L, -2) ? lua_tostring(L, -2) : "";
  FUZZ_CHECK(status != "bad", msg);
  lua_settop(L, top);
  return 0;
}
