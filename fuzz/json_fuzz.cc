// JSON in and out: orch::parse_json / dump_json (HTTP bodies, --input, stored outputs), the
// conversion to Lua values and back (bindings/convert.cc push_json / lua_to_json), and
// o.json.decode / o.json.encode through a pipeline's Lua state.
//
// Invariants: nothing throws or crashes; what parse_json accepts dumps and parses back to the
// same value, and survives push_json + lua_to_json (up to the documented changes: integers
// beyond 2^53 become strings); o.json.decode accepts what parse_json accepts (and the reverse,
// within its depth limit), and its result encodes, decodes and encodes again to the same text.
#include <string>

#include "bindings/convert.h"
#include "bindings/lua_state.h"
#include "fuzz/fuzz_util.h"
#include "base/json_util.h"

using namespace orch;
using orch::fuzz::fail;

namespace {

constexpr int64_t kExact = int64_t{1} << 53;

// What a value looks like after a trip through Lua (see convert.h).
json through_lua(const json& j) {
  switch (j.type()) {
    case json::value_t::number_integer: {
      int64_t v = j.get<int64_t>();
      return v > kExact || v < -kExact ? json(std::to_string(v)) : j;
    }
    case json::value_t::number_unsigned: {
      uint64_t v = j.get<uint64_t>();
      return v > static_cast<uint64_t>(kExact) ? json(std::to_string(v)) : j;
    }
    case json::value_t::array: {
      json out = json::array();
      for (const auto& v : j) out.push_back(through_lua(v));
      return out;
    }
    case json::value_t::object: {
      json out = json::object();
      for (const auto& [k, v] : j.items()) out[k] = through_lua(v);
      return out;
    }
    default:
      return j;
  }
}

int depth_of(const json& j) {
  int d = 0;
  if (j.is_structured())
    for (const auto& v : j) d = std::max(d, depth_of(v));
  return j.is_structured() ? d + 1 : 0;
}

struct PushArgs {
  const json* value;
};

int push_protected(lua_State* L) {
  auto* a = static_cast<PushArgs*>(lua_touserdata(L, 1));
  push_json(L, *a->value);
  lua_setglobal(L, "__fuzz_value");
  return 0;
}

// o.json.decode(text) then o.json.encode on what it returned. Returns false when decode
// refused the text.
bool lua_decode_encode(const std::string& text, std::string* encoded, std::string* decode_err) {
  lua_State* L = orch::fuzz::shared_engine().L();
  int top = lua_gettop(L);
  static const char kChunk[] = R"(
    local o = require "orch"
    local text = ...
    local v, err = o.json.decode(text)
    if v == nil and err ~= nil then return nil, err end
    local once = o.json.encode(v)
    -- (not assert(): false and null decode to falsy values)
    local back, back_err = o.json.decode(once)
    if back == nil and back_err ~= nil then error("decode(encode(v)) failed: " .. back_err) end
    local again = o.json.encode(back)
    if again ~= once then error("encode(decode(encode(v))) differs: " .. once .. " / " .. again) end
    return once
  )";
  if (luaL_loadbuffer(L, kChunk, sizeof kChunk - 1, "=json_fuzz") != 0)
    fail(std::string("loading the chunk: ") + lua_tostring(L, -1));
  lua_pushlstring(L, text.data(), text.size());
  if (orch::fuzz::pcall_bounded(L, 1, 2, 100000) != 0)
    fail(std::string("o.json.decode/encode raised: ") + lua_tostring(L, -1));
  bool ok = lua_isstring(L, -2);
  if (ok)
    *encoded = lua_tostring(L, -2);
  else
    *decode_err = lua_tostring(L, -1) ? lua_tostring(L, -1) : "(no message)";
  lua_settop(L, top);
  return ok;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(orch::fuzz::bytes(data, size));
  std::string err;
  json j;
  try {
    j = parse_json(text, &err);
  } catch (const json::out_of_range& e) {
    // KNOWN (issue 12, finding 8: {"n":1e309} answers 500): parse_json lets the parser's
    // number-overflow exception through. Counted as a refusal until that fix is merged; then
    // this catch goes and the line below catches it again.
    j = json(json::value_t::discarded);
    err = e.what();
  } catch (const std::exception& e) {
    fail(std::string("parse_json threw: ") + e.what());
  }
  const bool parsed = !j.is_discarded();
  if (parsed) {
    FUZZ_CHECK(parse_json(dump_json(j), &err) == j, "dump/parse round trip: " + dump_json(j));
    FUZZ_CHECK(parse_json(dump_json(j, 2), &err) == j, "pretty dump/parse round trip");

    lua_State* L = orch::fuzz::shared_engine().L();
    int top = lua_gettop(L);
    PushArgs args{&j};
    if (lua_cpcall(L, push_protected, &args) != 0)
      fail(std::string("push_json raised: ") + lua_tostring(L, -1));
    lua_getglobal(L, "__fuzz_value");
    json back;
    std::string why;
    bool ok = lua_to_json(L, -1, &back, &why);
    lua_settop(L, top);
    lua_pushnil(L);
    lua_setglobal(L, "__fuzz_value");
    if (depth_of(j) <= kMaxJsonDepth) {
      FUZZ_CHECK(ok, "lua_to_json refused what push_json made: " + why);
      FUZZ_CHECK(back == through_lua(j),
                 "Lua round trip: " + dump_json(j) + " came back as " + dump_json(back));
    }
  }

  std::string encoded, decode_err;
  const bool decoded = lua_decode_encode(text, &encoded, &decode_err);
  if (decoded) FUZZ_CHECK(parsed, "o.json.decode accepted what parse_json refused: " + err);
  if (parsed && depth_of(j) <= kMaxJsonDepth)
    FUZZ_CHECK(decoded, "o.json.decode refused what parse_json accepted: " + decode_err);
  return 0;
}
