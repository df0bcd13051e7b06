// o.wait: a signal from outside.
#include <regex>

#include "engine/steps/compiler.h"

namespace orch {
namespace {

// A signal's name is a path segment of the API (POST /api/runs/ID/signals/NAME) and a word on
// the command line: kept to what needs no quoting in either.
const std::regex& signal_name_pattern() {
  static const std::regex kName("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$");
  return kName;
}

const Options<Step> kWaitOptions = {
    {"signal", "string",
     [](Compiler& c, int v, int line, const std::string& what, Step* s) {
       if (lua_type(c.L_, v) != LUA_TSTRING) {
         c.error(line, what + ": signal must be a string (the signal's name), got " +
                           c.describe_value(v));
         return;
       }
       s->wait().signal = lua_tostring(c.L_, v);
     }},
    {"timeout", "duration",
     [](Compiler& c, int v, int line, const std::string& what, Step* s) {
       c.read_timeout_value(v, line, what, &s->wait().timeout_ms);
     }},
    {"on_timeout", "\"fail\" or \"continue\"",
     [](Compiler& c, int v, int line, const std::string& what, Step* s) {
       std::string t = lua_type(c.L_, v) == LUA_TSTRING ? lua_tostring(c.L_, v) : "";
       if (t == "continue")
         s->wait().continue_on_timeout = true;
       else if (t != "fail")
         c.error(line, what + ": on_timeout must be \"fail\" or \"continue\", got " +
                           (t.empty() ? c.describe_value(v) : "'" + t + "'"));
     }},
    {"description", "string",
     [](Compiler& c, int v, int line, const std::string& what, Step* s) {
       if (lua_type(c.L_, v) == LUA_TSTRING) s->description = lua_tostring(c.L_, v);
     }},
};

}  // namespace

void Compiler::compile_wait(int v, int line, const std::string& prefix, Step* s) {
  std::string what = read_id(v, line, "wait", prefix, s);
  read_step_options(v, kWaitOptions, line, what, s,
                    "{signal=, timeout=, on_timeout=\"fail\"|\"continue\"}");
  WaitSpec& w = s->wait();
  if (w.signal.empty()) w.signal = s->id;
  if (!std::regex_match(w.signal, signal_name_pattern()))
    error(line, what + ": signal '" + w.signal +
                    "' is not a usable name: letters, digits, '_', '-' and '.', at most 128, "
                    "e.g. signal = \"ci_done\"");
  if (w.continue_on_timeout && w.timeout_ms == 0)
    error(line, what + ": on_timeout = \"continue\" needs a timeout (e.g. timeout = \"2h\")");
}

}  // namespace orch
