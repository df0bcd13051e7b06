// Lua values <-> JSON (nlohmann::json).
//
// Tables with keys 1..n are arrays; other tables are objects (non-string keys become strings).
// An empty table is an object unless it carries orch's array metatable (o.json.array). JSON
// null is a light userdata sentinel (o.json.null). Integral numbers within 2^53 become JSON
// integers. Functions, userdata, threads, NaN/inf and cycles are errors naming the path.
#pragma once
#include <lua.hpp>
#include <string>

#include "runtime/json_util.h"

namespace orch {

constexpr int kMaxJsonDepth = 200;

// Registry keys for the array metatable.
void convert_init(lua_State* L);
void push_array_mt(lua_State* L);

bool lua_to_json(lua_State* L, int idx, json* out, std::string* err);
void push_json(lua_State* L, const json& j);

}  // namespace orch
