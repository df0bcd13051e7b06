// A move-only owner of a registry reference (luaL_ref / luaL_unref).
#pragma once
#include <lua.hpp>

namespace orch {

class LuaRef {
 public:
  LuaRef() = default;
  // Pops the value on top of L's stack and anchors it in the registry.
  static LuaRef pop(lua_State* L) {
    LuaRef r;
    r.L_ = L;
    r.ref_ = luaL_ref(L, LUA_REGISTRYINDEX);
    return r;
  }
  // Anchors a copy of the value at `idx` (the stack is unchanged).
  static LuaRef at(lua_State* L, int idx) {
    lua_pushvalue(L, idx);
    return pop(L);
  }
  ~LuaRef() { reset(); }
  LuaRef(LuaRef&& o) noexcept : L_(o.L_), ref_(o.ref_) { o.ref_ = LUA_NOREF; }
  LuaRef& operator=(LuaRef&& o) noexcept {
    if (this != &o) {
      reset();
      L_ = o.L_;
      ref_ = o.ref_;
      o.ref_ = LUA_NOREF;
    }
    return *this;
  }
  LuaRef(const LuaRef&) = delete;
  LuaRef& operator=(const LuaRef&) = delete;

  void reset() {
    if (L_ && ref_ != LUA_NOREF && ref_ != LUA_REFNIL) luaL_unref(L_, LUA_REGISTRYINDEX, ref_);
    ref_ = LUA_NOREF;
  }
  // Pushes the value (nil when empty).
  void push(lua_State* L) const {
    if (ref_ == LUA_NOREF)
      lua_pushnil(L);
    else
      lua_rawgeti(L, LUA_REGISTRYINDEX, ref_);
  }
  bool empty() const { return ref_ == LUA_NOREF || ref_ == LUA_REFNIL; }
  int id() const { return ref_; }

 private:
  lua_State* L_ = nullptr;
  int ref_ = LUA_NOREF;
};

}  // namespace orch
