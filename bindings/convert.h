// Lua values <-> JSON (nlohmann::json).
//
// Tables with keys 1..n are arrays; other tables are objects (non-string keys become strings).
// An empty table is an object unless it carries orch's array metatable (o.json.array). JSON
// null is a light userdata sentinel (o.json.null). Integral numbers within 2^53 become JSON
// integers. Functions, userdata, threads, NaN/inf and cycles are errors naming the path.
// JSON integers beyond 2^53 become Lua strings of their exact digits: a double would silently
// change them (ids, counters), and a string keeps them intact through a round trip.
// Both directions are bounded in depth (kMaxJsonDepth, base/json_util.h): neither recursion
// can run out of C stack or Lua stack, whatever a pipeline builds or a sender sends.
#pragma once
#include <lua.hpp>
#include <string>
#include <string_view>

#include "base/json_util.h"

namespace orch {

// Registry keys for the array metatable.
void convert_init(lua_State* L);
void push_array_mt(lua_State* L);

// With check_utf8, a string (or key) that is not valid UTF-8 is an error naming its path
// (o.json.encode); otherwise it is kept and replaced when the JSON is written (dump_json).
bool lua_to_json(lua_State* L, int idx, json* out, std::string* err, bool check_utf8 = false);
// The byte offset of the first invalid UTF-8 sequence in s, or npos when s is valid.
size_t invalid_utf8_at(std::string_view s);
// Pushes j as a Lua value. Values nested deeper than kMaxRecordJsonDepth (which no parsed
// text can be) are cut there: the deeper containers become o.json.null. Never raises for depth.
void push_json(lua_State* L, const json& j);

}  // namespace orch
