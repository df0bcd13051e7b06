// Evaluates Lua snippets in a real pipeline state (sandbox + embedded stdlib), outside any
// run: for the stdlib's synchronous libraries (o.json, o.template, o.transform).
#pragma once
#include <catch2/catch.hpp>
#include <memory>
#include <string>

#include "bindings/convert.h"
#include "bindings/lua_state.h"
#include "base/json_util.h"

namespace orch::test {

class LuaEval {
 public:
  explicit LuaEval(const SandboxOptions& sb = {}) {
    std::string err;
    engine_ = LuaEngine::create(sb, &err);
    INFO(err);
    REQUIRE(engine_);
  }
  // Runs `body` (with `o` bound to the orch module) and returns its first result as compact
  // JSON, or "error: <message>" when it raised (or returned something JSON cannot hold).
  std::string operator()(const std::string& body) {
    lua_State* L = engine_->L();
    std::string err, tb;
    int top = lua_gettop(L);
    if (!engine_->run_pipeline_chunk("eval.lua", "local o = require 'orch'\n" + body, &err, &tb))
      return "error: " + err;
    json j;
    bool ok = lua_to_json(L, -1, &j, &err);
    lua_settop(L, top);
    return ok ? dump_json(j) : "error: (result) " + err;
  }
  LuaEngine* engine() { return engine_.get(); }

 private:
  std::unique_ptr<LuaEngine> engine_;
};

inline bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

}  // namespace orch::test
