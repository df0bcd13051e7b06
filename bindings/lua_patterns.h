// string.find, string.match, string.gmatch and string.gsub with a step budget.
//
// Lua's pattern matcher backtracks: `("a"):rep(3000):find(".-.-.-.-.-.-b")` takes minutes
// inside one C call, where the count hook that enforces a node's timeout (and Ctrl-C / SIGTERM)
// never runs. These replacements are LuaJIT 2.1's own matcher (lib_string.c, MIT licence,
// same semantics and error messages) with one addition: every kCheckEvery steps (a call of the
// recursive matcher, or a character scanned by a greedy repetition) they call `check`, which
// raises a Lua error when the running node, condition or pipeline load is past its deadline or
// the process is being interrupted. Plain finds (no special characters, or `plain`) are linear
// and are checked the same way per search.
#pragma once
#include <lua.hpp>

namespace orch {

// Raises a Lua error (lua_error) when whatever runs must stop; returns otherwise. Called from
// inside the string function: level 1 of the stack is the Lua code that called it.
using PatternCheck = void (*)(lua_State* L);

inline constexpr unsigned kPatternCheckEvery = 1u << 14;

// Replaces find, match, gmatch and gsub in the global `string` table (the one the string
// metatable's __index is, so `s:find(...)` uses them too). Call before anything copies them.
void install_bounded_patterns(lua_State* L, PatternCheck check);

}  // namespace orch
