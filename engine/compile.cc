#include "engine/compile.h"

#include <algorithm>
#include <regex>
#include <unordered_map>

#include "base/cron.h"
#include "base/duration.h"
#include "base/secrets.h"
#include "bindings/convert.h"

namespace orch {

std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  // Within 2 edits, or a third of the word's length for longer words ("retries" -> "retry").
  size_t best_d = std::max<size_t>(2, (word.size() + 2) / 3) + 1;
  for (const auto& c : candidates) {
    std::vector<size_t> prev(c.size() + 1), cur(c.size() + 1);
    for (size_t j = 0; j <= c.size(); j++) prev[j] = j;
    for (size_t i = 1; i <= word.size(); i++) {
      cur[0] = i;
      for (size_t j = 1; j <= c.size(); j++)
        cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (word[i - 1] != c[j - 1])});
      std::swap(prev, cur);
    }
    if (prev[c.size()] < best_d) {
      best_d = prev[c.size()];
      best = c;
    }
  }
  return best;
}

namespace {

const std::regex kIdRe("^[A-Za-z_][A-Za-z0-9_-]*$");
const std::regex kNameRe("^[A-Za-z0-9][A-Za-z0-9_.-]*$");

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

class Compiler {
 public:
  Compiler(lua_State* L, const std::string& file, Pipeline* p, std::vector<Diagnostic>* d)
      : L_(L), file_(file), p_(p), diags_(d) {}

  bool run(int idx) {
    int top = lua_gettop(L_);
    idx = lua_absindex_compat(idx);
    compile_pipeline_table(idx);
    lua_settop(L_, top);
    return diags_->empty();
  }

 private:
  int lua_absindex_compat(int idx) { return idx < 0 ? lua_gettop(L_) + idx + 1 : idx; }

  void error(int line, std::string msg) { diags_->push_back({file_, line, std::move(msg)}); }

  // Field helpers operating on the table at `t`.
  std::string str_field(int t, const char* k) {
    lua_getfield(L_, t, k);
    std::string s = lua_type(L_, -1) == LUA_TSTRING ? lua_tostring(L_, -1) : "";
    lua_pop(L_, 1);
    return s;
  }
  int line_of(int t, int fallback) {
    lua_getfield(L_, t, "__line");
    int l = lua_isnumber(L_, -1) ? static_cast<int>(lua_tointeger(L_, -1)) : fallback;
    lua_pop(L_, 1);
    return l;
  }
  std::string kind_of(int t) {
    if (!lua_istable(L_, t)) return "";
    return str_field(t, "__orch");
  }
  std::string describe_value(int idx) {
    std::string k = kind_of(idx);
    if (!k.empty()) return "o." + k + "(...)";
    if (lua_istable(L_, idx)) return "a plain table";
    return std::string("a ") + luaL_typename(L_, idx);
  }

  // Reports string keys of table `t` not in `known` (keys starting with "__" are internal).
  void check_keys(int t, const std::vector<std::string>& known, int line, const std::string& what,
                  bool list_ok = false) {
    lua_pushnil(L_);
    while (lua_next(L_, t)) {
      lua_pop(L_, 1);
      if (lua_type(L_, -1) == LUA_TSTRING) {
        std::string k = lua_tostring(L_, -1);
        if (k.rfind("__", 0) == 0) continue;
        if (std::find(known.begin(), known.end(), k) == known.end()) {
          std::string hint = did_you_mean(k, known);
          error(line, what + ": unknown option '" + k + "'" +
                          (hint.empty() ? "" : " (did you mean '" + hint + "'?)") +
                          " (known: " + join(known) + ")");
        }
      } else if (lua_type(L_, -1) != LUA_TNUMBER) {
        error(line, what + ": option keys must be strings");
      } else if (!list_ok) {
        error(line, what + ": options are name = value pairs, but a list entry was given (known: " +
                        join(known) + ")");
      }
    }
  }

  bool read_duration(int idx, int line, const std::string& what, int64_t* out) {
    std::string err;
    std::optional<int64_t> ms;
    if (lua_type(L_, idx) == LUA_TNUMBER)
      ms = seconds_to_ms(lua_tonumber(L_, idx), &err);
    else if (lua_type(L_, idx) == LUA_TSTRING)
      ms = parse_duration_ms(lua_tostring(L_, idx), &err);
    else
      err = std::string("expected a duration like \"30s\" or a number of seconds, got ") +
            luaL_typename(L_, idx);
    if (!ms) {
      error(line, what + ": " + err);
      return false;
    }
    *out = *ms;
    return true;
  }

  void read_retry(int idx, int line, const std::string& what, RetryPolicy* r) {
    if (lua_type(L_, idx) == LUA_TNUMBER) {
      double n = lua_tonumber(L_, idx);
      if (n < 1 || std::floor(n) != n || n > 1000)
        error(line, what + ": retry must be a whole number of attempts between 1 and 1000");
      else
        r->max_attempts = static_cast<int>(n);
      return;
    }
    if (!lua_istable(L_, idx)) {
      error(line, what +
                      ": retry must be a number of attempts or a table {max=, backoff=, "
                      "base=, cap=, jitter=}, got " +
                      std::string(luaL_typename(L_, idx)));
      return;
    }
    check_keys(idx, {"max", "backoff", "base", "cap", "jitter"}, line, what + " retry");
    lua_getfield(L_, idx, "max");
    if (!lua_isnil(L_, -1)) {
      double n = lua_isnumber(L_, -1) ? lua_tonumber(L_, -1) : -1;
      if (n < 1 || std::floor(n) != n || n > 1000)
        error(line, what + ": retry.max must be a whole number of attempts between 1 and 1000");
      else
        r->max_attempts = static_cast<int>(n);
    }
    lua_pop(L_, 1);
    lua_getfield(L_, idx, "backoff");
    if (!lua_isnil(L_, -1)) {
      std::string b = lua_type(L_, -1) == LUA_TSTRING ? lua_tostring(L_, -1) : "";
      if (b == "exponential")
        r->exponential = true;
      else if (b == "fixed")
        r->exponential = false;
      else
        error(line, what + ": retry.backoff must be \"exponential\" or \"fixed\"");
    }
    lua_pop(L_, 1);
    lua_getfield(L_, idx, "base");
    if (!lua_isnil(L_, -1)) read_duration(-1, line, what + " retry.base", &r->base_ms);
    lua_pop(L_, 1);
    lua_getfield(L_, idx, "cap");
    if (!lua_isnil(L_, -1)) read_duration(-1, line, what + " retry.cap", &r->cap_ms);
    lua_pop(L_, 1);
    lua_getfield(L_, idx, "jitter");
    if (!lua_isnil(L_, -1)) {
      if (lua_type(L_, -1) != LUA_TBOOLEAN)
        error(line, what + ": retry.jitter must be true or false");
      else
        r->jitter = lua_toboolean(L_, -1);
    }
    lua_pop(L_, 1);
    if (r->cap_ms < r->base_ms) r->cap_ms = r->base_ms;
  }

  bool check_id(int idx, int line, const std::string& kind, std::string* out) {
    if (lua_type(L_, idx) != LUA_TSTRING) {
      error(line, "o." + kind + ": the first argument must be the step's id (a string), got " +
                      describe_value(idx));
      return false;
    }
    *out = lua_tostring(L_, idx);
    if (!std::regex_match(*out, kIdRe)) {
      error(line, "o." + kind + " '" + *out +
                      "': invalid id (use letters, digits, '_' and '-', starting with a letter)");
      return false;
    }
    auto it = ids_.find(*out);
    if (it != ids_.end()) {
      error(line, "duplicate id '" + *out + "' (first used at " + file_ + ":" +
                      std::to_string(it->second) + "); ids must be unique in a pipeline");
      return false;
    }
    ids_[*out] = line;
    return true;
  }

  void compile_pipeline_table(int idx) {
    if (kind_of(idx) != "pipeline") {
      if (lua_isnil(L_, idx) || lua_isnone(L_, idx))
        error(0,
              "the file does not return a pipeline; end it with: return o.pipeline \"name\" "
              "{ ... }");
      else
        error(0, "the file must return o.pipeline \"name\" { ... }, but it returns " +
                     describe_value(idx));
      return;
    }
    int line = line_of(idx, 0);
    // `return o.pipeline { ... }` is a tail call: the frame that would tell the line is gone.
    // The first line that calls o.pipeline is where it is.
    if (line == 0) line = find_line(p_->source, "pipeline");
    lua_getfield(L_, idx, "__name");
    if (lua_type(L_, -1) != LUA_TSTRING) {
      error(line, std::string("pipeline name must be a string, got ") + luaL_typename(L_, -1));
    } else {
      p_->name = lua_tostring(L_, -1);
      if (!std::regex_match(p_->name, kNameRe))
        error(line, "pipeline name '" + p_->name +
                        "' is invalid (use letters, digits, '_', '-' and '.')");
    }
    lua_pop(L_, 1);
    std::string what = "pipeline '" + p_->name + "'";
    check_keys(idx,
               {"description", "triggers", "defaults", "tags", "concurrency_key", "concurrency"},
               line, what, true);
    p_->description = str_field(idx, "description");
    read_concurrency(idx, line, what, &p_->concurrency_key, &p_->concurrency_limit);

    lua_getfield(L_, idx, "tags");
    if (lua_istable(L_, -1)) {
      for (int i = 1; i <= static_cast<int>(lua_objlen(L_, -1)); i++) {
        lua_rawgeti(L_, -1, i);
        if (lua_type(L_, -1) == LUA_TSTRING)
          p_->tags.emplace_back(lua_tostring(L_, -1));
        else
          error(line, what + ": tags must be strings");
        lua_pop(L_, 1);
      }
    } else if (!lua_isnil(L_, -1)) {
      error(line, what + ": tags must be a list of strings");
    }
    lua_pop(L_, 1);

    lua_getfield(L_, idx, "defaults");
    if (lua_istable(L_, -1)) {
      int d = lua_gettop(L_);
      check_keys(d, {"retry", "timeout"}, line, what + " defaults");
      lua_getfield(L_, d, "retry");
      if (!lua_isnil(L_, -1)) read_retry(lua_gettop(L_), line, what + " defaults", &default_retry_);
      lua_pop(L_, 1);
      lua_getfield(L_, d, "timeout");
      if (!lua_isnil(L_, -1))
        read_duration(-1, line, what + " defaults.timeout", &default_timeout_);
      lua_pop(L_, 1);
    } else if (!lua_isnil(L_, -1)) {
      error(line, what + ": defaults must be a table {retry=, timeout=}");
    }
    lua_pop(L_, 1);

    lua_getfield(L_, idx, "triggers");
    if (kind_of(lua_gettop(L_)) == "trigger")  // would be read as an empty list
      error(line,
            what + ": triggers must be a list: triggers = { o." + str_field(-1, "type") + "... }");
    else if (lua_istable(L_, -1))
      compile_triggers(lua_gettop(L_), line);
    else if (!lua_isnil(L_, -1))
      error(line, what + ": triggers must be a list");
    lua_pop(L_, 1);

    auto root = std::make_unique<Step>();
    root->kind = StepKind::Seq;
    root->line = line;
    compile_children(idx, line, "", what, root.get(), true);
    if (root->children.empty() && count_array(idx) == 0)
      error(line, what + " has no steps; add at least one o.node(...)");
    p_->root = std::move(root);
  }

  void check_options(int line, const std::string& what, const json& spec,
                     std::initializer_list<const char*> known) {
    for (auto& [k, v] : spec.items()) {
      bool ok = false;
      for (const char* n : known) ok = ok || k == n;
      if (!ok) {
        std::string list;
        for (const char* n : known) list += (list.empty() ? "" : ", ") + std::string(n);
        error(line, what + ": unknown option '" + k + "' (known: " + list + ")");
      }
    }
  }

  void compile_triggers(int t, int line) {
    int n = static_cast<int>(lua_objlen(L_, t));
    for (int i = 1; i <= n; i++) {
      lua_rawgeti(L_, t, i);
      int v = lua_gettop(L_);
      if (kind_of(v) != "trigger") {
        error(line, "triggers[" + std::to_string(i) +
                        "] must be o.webhook{...}, o.schedule \"cron\" or o.manual{}, got " +
                        describe_value(v));
        lua_pop(L_, 1);
        continue;
      }
      Trigger tr;
      tr.type = str_field(v, "type");
      tr.line = line_of(v, line);
      lua_getfield(L_, v, "opts");
      json spec;
      std::string err;
      if (!lua_istable(L_, -1)) {
        error(tr.line, "o." + tr.type + " expects a table of options");
      } else if (!lua_to_json(L_, lua_gettop(L_), &spec, &err)) {
        error(tr.line, "o." + tr.type + ": " + err);
      } else if (tr.type == "webhook") {
        check_options(tr.line, "o.webhook", spec,
                      {"path", "secret", "signature_header", "dedup_header", "input"});
        if (!spec.contains("path") || !spec["path"].is_string() ||
            spec["path"].get<std::string>().rfind("/", 0) != 0)
          error(tr.line, "o.webhook: 'path' must be a string starting with '/'");
        for (const char* k : {"secret", "signature_header", "dedup_header", "input"})
          if (spec.contains(k) && !spec[k].is_string())
            error(tr.line, std::string("o.webhook: '") + k + "' must be a string");
        if (spec.contains("secret") && spec["secret"].is_string() &&
            !valid_secret_name(spec["secret"].get<std::string>()))
          error(tr.line,
                "o.webhook: 'secret' is the NAME of a secret (letters, digits, _; set "
                "as ORCHRUN_SECRET_<NAME> or in the secrets file), got '" +
                    spec["secret"].get<std::string>() + "'");
        if (spec.contains("input") && spec["input"].is_string() && spec["input"] != "body" &&
            spec["input"] != "envelope")
          error(tr.line, "o.webhook: 'input' must be \"body\" or \"envelope\"");
      } else if (tr.type == "schedule") {
        check_options(tr.line, "o.schedule", spec, {"cron", "tz", "missed", "input"});
        // (value() would throw on a cron that is not a string: the check comes first)
        const bool cron_ok = !spec.contains("cron") || spec["cron"].is_string();
        if (!cron_ok)
          error(tr.line, "o.schedule: 'cron' must be a cron expression like \"0 2 * * *\", got " +
                             std::string(spec["cron"].type_name()));
        std::string cron = spec.contains("cron") && spec["cron"].is_string()
                               ? spec["cron"].get<std::string>()
                               : "";
        std::string tz =
            spec.contains("tz") && spec["tz"].is_string() ? spec["tz"].get<std::string>() : "";
        std::string cerr;
        if (!cron_ok) {
          // said above
        } else if (spec.contains("tz") && !spec["tz"].is_string())
          error(tr.line, "o.schedule: 'tz' must be a time zone name like \"Europe/Paris\"");
        else if (!CronExpr::parse(cron, tz, &cerr))
          error(tr.line, "o.schedule: '" + cron + "': " + cerr);
        if (spec.contains("missed") && (!spec["missed"].is_string() ||
                                        (spec["missed"] != "skip" && spec["missed"] != "run_once")))
          error(tr.line, "o.schedule: 'missed' must be \"skip\" or \"run_once\"");
        if (spec.contains("input") && !spec["input"].is_object())
          error(tr.line, "o.schedule: 'input' must be a table of named fields");
      }
      tr.spec = dump_json(spec);
      p_->triggers.push_back(std::move(tr));
      lua_pop(L_, 2);
    }
  }

  // opts.timeout, when given: a duration greater than zero.
  void read_timeout(int o, int line, const std::string& what, int64_t* ms) {
    lua_getfield(L_, o, "timeout");
    if (!lua_isnil(L_, -1)) {
      if (read_duration(-1, line, what + " timeout", ms) && *ms == 0)
        error(line, what + ": timeout must be greater than zero");
    }
    lua_pop(L_, 1);
  }

  int count_array(int t) { return static_cast<int>(lua_objlen(L_, t)); }

  static int find_line(const std::string& src, const std::string& word) {
    int line = 1;
    for (size_t i = 0; i < src.size(); i++) {
      if (src[i] == '\n') line++;
      if (src.compare(i, word.size(), word) == 0 && i > 0 && src[i - 1] == '.') return line;
    }
    return 0;
  }

  // Compiles the array part of table `t` as the children of `parent`.
  void compile_children(int t, int line, const std::string& prefix, const std::string& what,
                        Step* parent, bool is_pipeline) {
    int n = count_array(t);
    // Holes (a nil in the middle, e.g. from a typo'd variable) would silently drop steps.
    int keys = 0;
    lua_pushnil(L_);
    while (lua_next(L_, t)) {
      lua_pop(L_, 1);
      if (lua_type(L_, -1) == LUA_TNUMBER) keys++;
    }
    if (keys != n)
      error(line, what +
                      ": the list of steps has a hole (a nil entry, e.g. an undefined "
                      "variable); " +
                      std::to_string(keys) + " steps found but #steps is " + std::to_string(n));
    for (int i = 1; i <= n; i++) {
      lua_rawgeti(L_, t, i);
      auto child = compile_step(lua_gettop(L_), line, prefix,
                                what + (is_pipeline ? " step " : " item ") + std::to_string(i));
      lua_pop(L_, 1);
      if (child) parent->children.push_back(std::move(child));
    }
  }

  std::unique_ptr<Step> compile_step(int v, int parent_line, const std::string& prefix,
                                     const std::string& where) {
    std::string kind = kind_of(v);
    if (kind.empty() || kind == "pipeline" || kind == "trigger") {
      std::string hint = lua_istable(L_, v) && kind.empty()
                             ? "; wrap a list of steps in o.seq { ... }"
                         : lua_isnil(L_, v) ? " (is a variable undefined?)"
                                            : "";
      error(parent_line, where +
                             ": expected a step (o.node, o.seq, o.parallel, o.when, "
                             "o.switch, o.approve, o.map, o.loop, o.call), got " +
                             describe_value(v) + hint);
      return nullptr;
    }
    int line = line_of(v, parent_line);
    auto s = std::make_unique<Step>();
    s->line = line;
    if (kind == "node") {
      s->kind = StepKind::Node;
      compile_node(v, line, prefix, s.get());
    } else if (kind == "seq") {
      s->kind = StepKind::Seq;
      lua_getfield(L_, v, "id");
      bool has_id = !lua_isnil(L_, -1);
      if (has_id && check_id(lua_gettop(L_), line, "seq", &s->id)) s->path = prefix + s->id;
      lua_pop(L_, 1);
      std::string child_prefix = has_id ? prefix + s->id + "/" : prefix;
      lua_getfield(L_, v, "children");
      if (!lua_istable(L_, -1) || count_array(lua_gettop(L_)) == 0)
        error(line, "o.seq" + (s->id.empty() ? std::string() : " '" + s->id + "'") +
                        ": expects a non-empty list of steps");
      else
        compile_children(lua_gettop(L_), line, child_prefix,
                         "o.seq" + (s->id.empty() ? "" : " '" + s->id + "'"), s.get(), false);
      lua_pop(L_, 1);
    } else if (kind == "parallel") {
      s->kind = StepKind::Parallel;
      compile_parallel(v, line, prefix, s.get());
    } else if (kind == "when") {
      s->kind = StepKind::When;
      compile_when(v, line, prefix, s.get());
    } else if (kind == "switch") {
      s->kind = StepKind::Switch;
      compile_switch(v, line, prefix, s.get());
    } else if (kind == "approve") {
      s->kind = StepKind::Approve;
      compile_approve(v, line, prefix, s.get());
    } else if (kind == "map") {
      s->kind = StepKind::Map;
      compile_map(v, line, prefix, s.get());
    } else if (kind == "loop") {
      s->kind = StepKind::Loop;
      compile_loop(v, line, prefix, s.get());
    } else if (kind == "call") {
      s->kind = StepKind::Call;
      compile_call(v, line, prefix, s.get());
    } else {
      error(line, where + ": unknown step kind '" + kind + "'");
      return nullptr;
    }
    if (!s->path.empty()) p_->by_path[s->path] = s.get();
    return s;
  }

  void compile_node(int v, int line, const std::string& prefix, Step* s) {
    lua_getfield(L_, v, "id");
    bool id_ok = check_id(lua_gettop(L_), line, "node", &s->id);
    lua_pop(L_, 1);
    if (id_ok) s->path = prefix + s->id;
    std::string what = "node '" + s->id + "'";
    lua_getfield(L_, v, "__nargs");
    if (lua_tointeger(L_, -1) > 3)
      error(line, what + ": o.node takes (id, function, options); extra arguments given");
    lua_pop(L_, 1);
    lua_getfield(L_, v, "fn");
    if (lua_type(L_, -1) != LUA_TFUNCTION)
      error(line, what + ": the body must be a function(ctx, input), got " + describe_value(-1));
    else
      s->fn = LuaRef::at(L_, -1);
    lua_pop(L_, 1);
    p_->node_count++;
    s->retry = default_retry_;
    s->timeout_ms = default_timeout_;
    lua_getfield(L_, v, "opts");
    int o = lua_gettop(L_);
    if (lua_isnil(L_, o)) {
      lua_pop(L_, 1);
      return;
    }
    if (!lua_istable(L_, o)) {
      error(line, what + ": options must be a table, got " + describe_value(o));
      lua_pop(L_, 1);
      return;
    }
    check_keys(o, kNodeOptions, line, what);
    read_node_options(o, line, what, s);
    lua_pop(L_, 1);
  }

  inline static const std::vector<std::string> kNodeOptions = {
      "retry",    "timeout",         "optional",    "fallback",   "skip_if",
      "escalate", "concurrency_key", "concurrency", "description"};

  // The options of a node body (o.node, or a function given to o.map / o.loop) in table `o`.
  void read_node_options(int o, int line, const std::string& what, Step* s) {
    lua_getfield(L_, o, "retry");
    if (!lua_isnil(L_, -1)) {
      s->retry = RetryPolicy{};
      read_retry(lua_gettop(L_), line, what, &s->retry);
    }
    lua_pop(L_, 1);
    read_timeout(o, line, what, &s->timeout_ms);
    lua_getfield(L_, o, "optional");
    if (!lua_isnil(L_, -1)) {
      if (lua_type(L_, -1) != LUA_TBOOLEAN)
        error(line, what + ": optional must be true or false, got " + describe_value(-1));
      else
        s->optional = lua_toboolean(L_, -1);
    }
    lua_pop(L_, 1);
    lua_getfield(L_, o, "fallback");
    if (!lua_isnil(L_, -1)) {
      if (lua_type(L_, -1) != LUA_TFUNCTION)
        error(line,
              what + ": fallback must be a function(ctx, input, err), got " + describe_value(-1));
      else
        s->fallback = LuaRef::at(L_, -1);
    }
    lua_pop(L_, 1);
    lua_getfield(L_, o, "skip_if");
    if (!lua_isnil(L_, -1)) {
      if (lua_type(L_, -1) != LUA_TFUNCTION && lua_type(L_, -1) != LUA_TBOOLEAN)
        error(line, what + ": skip_if must be a function(ctx, input) or a boolean, got " +
                        describe_value(-1));
      else
        s->skip_if = LuaRef::at(L_, -1);
    }
    lua_pop(L_, 1);
    lua_getfield(L_, o, "escalate");
    read_escalation(lua_gettop(L_), line, what, &s->escalate);
    lua_pop(L_, 1);
    read_concurrency(o, line, what, &s->concurrency_key, &s->concurrency_limit);
    s->description = str_field(o, "description");
  }

  // concurrency_key = "name", concurrency = n (default 1)
  void read_concurrency(int o, int line, const std::string& what, std::string* key, int* limit) {
    lua_getfield(L_, o, "concurrency_key");
    if (lua_type(L_, -1) == LUA_TSTRING && lua_objlen(L_, -1) > 0)
      *key = lua_tostring(L_, -1);
    else if (!lua_isnil(L_, -1))
      error(line, what + ": concurrency_key must be a non-empty string, e.g. \"deploy\"");
    lua_pop(L_, 1);
    lua_getfield(L_, o, "concurrency");
    if (!lua_isnil(L_, -1)) {
      double n = lua_isnumber(L_, -1) ? lua_tonumber(L_, -1) : 0;
      if (n < 1 || std::floor(n) != n || n > 100000)
        error(line, what + ": concurrency must be a whole number >= 1 (how many may hold '" + *key +
                        "' at once)");
      else if (key->empty())
        error(line, what + ": concurrency is given without a concurrency_key");
      else
        *limit = static_cast<int>(n);
    }
    lua_pop(L_, 1);
  }

  // escalate = false | true | { message=, approvers=, timeout=, on_timeout= } at `idx`.
  void read_escalation(int idx, int line, const std::string& what, Escalation* e) {
    if (lua_isnil(L_, idx)) return;
    if (lua_type(L_, idx) == LUA_TBOOLEAN) {
      e->enabled = lua_toboolean(L_, idx);
      return;
    }
    if (!lua_istable(L_, idx)) {
      error(line, what +
                      ": escalate must be true, false or a table {message=, approvers=, "
                      "timeout=, on_timeout=}, got " +
                      describe_value(idx));
      return;
    }
    std::string w = what + " escalate";
    check_keys(idx, {"message", "approvers", "timeout", "on_timeout"}, line, w);
    read_gate_options(idx, line, w, &e->message, &e->approvers, &e->timeout_ms,
                      &e->approve_on_timeout);
  }

  // The options shared by o.approve and escalations.
  void read_gate_options(int o, int line, const std::string& what, std::string* message,
                         std::vector<std::string>* approvers, int64_t* timeout_ms,
                         bool* approve_on_timeout) {
    lua_getfield(L_, o, "message");
    if (lua_type(L_, -1) == LUA_TSTRING)
      *message = lua_tostring(L_, -1);
    else if (!lua_isnil(L_, -1))
      error(line, what + ": message must be a string");
    lua_pop(L_, 1);
    lua_getfield(L_, o, "approvers");
    if (lua_istable(L_, -1)) {
      int n = static_cast<int>(lua_objlen(L_, -1));
      for (int i = 1; i <= n; i++) {
        lua_rawgeti(L_, -1, i);
        if (lua_type(L_, -1) == LUA_TSTRING)
          approvers->emplace_back(lua_tostring(L_, -1));
        else
          error(line, what + ": approvers must be a list of names");
        lua_pop(L_, 1);
      }
      if (n == 0) error(line, what + ": approvers is empty; leave it out to let anyone approve");
    } else if (!lua_isnil(L_, -1)) {
      error(line, what + ": approvers must be a list of names, e.g. { \"alice\", \"bob\" }");
    }
    lua_pop(L_, 1);
    read_timeout(o, line, what, timeout_ms);
    lua_getfield(L_, o, "on_timeout");
    if (lua_type(L_, -1) == LUA_TSTRING) {
      std::string t = lua_tostring(L_, -1);
      if (t == "approve")
        *approve_on_timeout = true;
      else if (t != "reject")
        error(line, what + ": on_timeout must be \"reject\" or \"approve\", got '" + t + "'");
    } else if (!lua_isnil(L_, -1)) {
      error(line, what + ": on_timeout must be \"reject\" or \"approve\"");
    }
    lua_pop(L_, 1);
  }

  // A body given as a plain function (o.map, o.loop): a node without an id of its own; its
  // path is the item's or the iteration's. `o` is the options table (or 0).
  std::unique_ptr<Step> function_body(int fn, int o, int line, const std::string& what) {
    auto n = std::make_unique<Step>();
    n->kind = StepKind::Node;
    n->line = line;
    n->fn = LuaRef::at(L_, fn);
    n->retry = default_retry_;
    n->timeout_ms = default_timeout_;
    p_->node_count++;
    if (o) read_node_options(o, line, what, n.get());
    return n;
  }

  // The step run by a map (per item) or a loop (per iteration), at `v`: a step or a function.
  std::unique_ptr<Step> body_step(int v, int o, int line, const std::string& what,
                                  const std::string& prefix) {
    if (lua_type(L_, v) == LUA_TFUNCTION) return function_body(v, o, line, what);
    if (lua_isnil(L_, v)) {
      error(line, what + ": needs a step (or a function(ctx, input)) to run");
      return nullptr;
    }
    return compile_step(v, line, prefix, what + " body");
  }

  void compile_map(int v, int line, const std::string& prefix, Step* s) {
    lua_getfield(L_, v, "id");
    if (check_id(lua_gettop(L_), line, "map", &s->id)) s->path = prefix + s->id;
    lua_pop(L_, 1);
    std::string what = "map '" + s->id + "'";
    lua_getfield(L_, v, "__nargs");
    if (lua_tointeger(L_, -1) > 4) error(line, what + ": o.map takes (id, items, step, options)");
    lua_pop(L_, 1);
    lua_getfield(L_, v, "items");
    if (lua_type(L_, -1) == LUA_TFUNCTION || lua_istable(L_, -1))
      s->items = LuaRef::at(L_, -1);
    else
      error(line, what + ": items must be a list or a function(ctx, input) returning one, got " +
                      describe_value(-1));
    lua_pop(L_, 1);
    lua_getfield(L_, v, "opts");
    int o = lua_gettop(L_);
    lua_getfield(L_, v, "body");
    int b = lua_gettop(L_);
    bool fn_body = lua_type(L_, b) == LUA_TFUNCTION;
    if (lua_istable(L_, o)) {
      std::vector<std::string> known = {"max"};
      if (fn_body) known.insert(known.end(), kNodeOptions.begin(), kNodeOptions.end());
      check_keys(o, known, line, what);
      lua_getfield(L_, o, "max");
      if (!lua_isnil(L_, -1)) {
        double m = lua_isnumber(L_, -1) ? lua_tonumber(L_, -1) : 0;
        if (m < 1 || std::floor(m) != m)
          error(line, what + ": max must be a whole number of items at once, >= 1");
        else
          s->max_concurrency = static_cast<int>(m);
      }
      lua_pop(L_, 1);
    } else if (!lua_isnil(L_, o)) {
      error(line, what + ": options must be a table {max=, ...}");
    }
    auto body = body_step(b, fn_body && lua_istable(L_, o) ? o : 0, line, what, s->path + "[]/");
    if (body) s->children.push_back(std::move(body));
    lua_pop(L_, 2);
  }

  void compile_loop(int v, int line, const std::string& prefix, Step* s) {
    lua_getfield(L_, v, "id");
    if (check_id(lua_gettop(L_), line, "loop", &s->id)) s->path = prefix + s->id;
    lua_pop(L_, 1);
    std::string what = "loop '" + s->id + "'";
    lua_getfield(L_, v, "opts");
    int o = lua_gettop(L_);
    lua_getfield(L_, v, "body");
    int b = lua_gettop(L_);
    if (!lua_istable(L_, o)) {
      error(line, what + ": options must be a table {max = n, done = function(ctx, output)}, got " +
                      describe_value(o));
    } else {
      check_keys(o, {"max", "done", "escalate", "description"}, line, what);
      lua_getfield(L_, o, "max");
      double m = lua_isnumber(L_, -1) ? lua_tonumber(L_, -1) : 0;
      if (m < 1 || std::floor(m) != m || m > 10000)
        error(line, what + ": max (the most iterations) is required: a whole number from 1 to " +
                        "10000");
      else
        s->max_iterations = static_cast<int>(m);
      lua_pop(L_, 1);
      lua_getfield(L_, o, "done");
      if (lua_type(L_, -1) == LUA_TFUNCTION)
        s->done = LuaRef::at(L_, -1);
      else if (!lua_isnil(L_, -1))
        error(line, what + ": done must be a function(ctx, output) returning true when finished");
      lua_pop(L_, 1);
      lua_getfield(L_, o, "escalate");
      read_escalation(lua_gettop(L_), line, what, &s->escalate);
      lua_pop(L_, 1);
      s->description = str_field(o, "description");
    }
    auto body = body_step(b, 0, line, what, s->path + "#/");
    if (body) s->children.push_back(std::move(body));
    lua_pop(L_, 2);
  }

  void compile_call(int v, int line, const std::string& prefix, Step* s) {
    lua_getfield(L_, v, "id");
    if (check_id(lua_gettop(L_), line, "call", &s->id)) s->path = prefix + s->id;
    lua_pop(L_, 1);
    std::string what = "call '" + s->id + "'";
    lua_getfield(L_, v, "__nargs");
    if (lua_tointeger(L_, -1) > 4)
      error(line, what + ": o.call takes (id, pipeline, input, options)");
    lua_pop(L_, 1);
    s->call_target = str_field(v, "target");
    static const std::regex kTarget("^[A-Za-z0-9_.][A-Za-z0-9_./-]*$");
    if (s->call_target.empty() || !std::regex_match(s->call_target, kTarget) ||
        s->call_target.find("..") != std::string::npos)
      error(line, what +
                      ": the pipeline to call must be a pipeline name or a .lua path beside this "
                      "file (no '..'), e.g. o.call(\"notify\", \"notify-oncall\", input)");
    lua_getfield(L_, v, "input");
    if (lua_type(L_, -1) == LUA_TFUNCTION || lua_istable(L_, -1))
      s->call_input = LuaRef::at(L_, -1);
    else if (!lua_isnil(L_, -1))
      error(line,
            what + ": input must be a table or a function(ctx, input), got " + describe_value(-1));
    lua_pop(L_, 1);
    lua_getfield(L_, v, "opts");
    int o = lua_gettop(L_);
    if (lua_istable(L_, o)) {
      check_keys(o, {"timeout", "description"}, line, what);
      read_timeout(o, line, what, &s->timeout_ms);
      s->description = str_field(o, "description");
    } else if (!lua_isnil(L_, o)) {
      error(line, what + ": options must be a table {timeout=}");
    }
    lua_pop(L_, 1);
  }

  void compile_parallel(int v, int line, const std::string& prefix, Step* s) {
    lua_getfield(L_, v, "id");
    if (check_id(lua_gettop(L_), line, "parallel", &s->id)) s->path = prefix + s->id;
    lua_pop(L_, 1);
    std::string what = "parallel '" + s->id + "'";
    lua_getfield(L_, v, "children");
    int c = lua_gettop(L_);
    if (!lua_istable(L_, c) || count_array(c) == 0) {
      error(line, what + ": expects a non-empty list of branches");
    } else {
      compile_children(c, line, s->path + "/", what, s, false);
      for (size_t i = 0; i < s->children.size(); i++)
        if (s->children[i]->id.empty())
          error(line, what + ": branch " + std::to_string(i + 1) +
                          " needs an id, so that its output can be found; use "
                          "o.seq(\"name\", { ... })");
    }
    lua_pop(L_, 1);
    lua_getfield(L_, v, "opts");
    int o = lua_gettop(L_);
    if (lua_istable(L_, o)) {
      check_keys(o, {"join", "max"}, line, what);
      lua_getfield(L_, o, "join");
      int n = static_cast<int>(s->children.size());
      if (lua_type(L_, -1) == LUA_TSTRING) {
        std::string j = lua_tostring(L_, -1);
        if (j == "all")
          s->join = 0;
        else if (j == "any")
          s->join = -1;
        else
          error(line,
                what + ": join must be \"all\", \"any\" or a number of branches, got '" + j + "'");
      } else if (lua_type(L_, -1) == LUA_TNUMBER) {
        double j = lua_tonumber(L_, -1);
        if (j < 1 || std::floor(j) != j || (n > 0 && j > n))
          error(line, what + ": join = " + std::string(lua_tostring(L_, -1)) +
                          " must be between 1 and the number of branches (" + std::to_string(n) +
                          ")");
        else
          s->join = static_cast<int>(j);  // n == count still means n successes (no optionals)
      } else if (!lua_isnil(L_, -1)) {
        error(line, what + ": join must be \"all\", \"any\" or a number");
      }
      lua_pop(L_, 1);
      lua_getfield(L_, o, "max");
      if (!lua_isnil(L_, -1)) {
        double m = lua_isnumber(L_, -1) ? lua_tonumber(L_, -1) : 0;
        if (m < 1 || std::floor(m) != m)
          error(line, what + ": max must be a whole number of branches >= 1");
        else
          s->max_concurrency = static_cast<int>(m);
      }
      lua_pop(L_, 1);
    } else if (!lua_isnil(L_, o)) {
      error(line, what + ": options must be a table {join=, max=}");
    }
    lua_pop(L_, 1);
  }

  void compile_when(int v, int line, const std::string& prefix, Step* s) {
    lua_getfield(L_, v, "id");
    if (check_id(lua_gettop(L_), line, "when", &s->id)) s->path = prefix + s->id;
    lua_pop(L_, 1);
    std::string what = "when '" + s->id + "'";
    lua_getfield(L_, v, "__nargs");
    if (lua_tointeger(L_, -1) > 4)
      error(line, what + ": o.when takes (id, condition, then_step [, else_step])");
    lua_pop(L_, 1);
    lua_getfield(L_, v, "cond");
    if (lua_type(L_, -1) != LUA_TFUNCTION && lua_type(L_, -1) != LUA_TBOOLEAN)
      error(line,
            what + ": the condition must be a function(ctx, input), got " + describe_value(-1));
    else
      s->cond = LuaRef::at(L_, -1);
    lua_pop(L_, 1);
    for (const char* branch : {"then", "else"}) {
      lua_getfield(L_, v, branch);
      if (lua_isnil(L_, -1) && std::string(branch) == "else") {
        s->children.push_back(nullptr);
      } else if (lua_isnil(L_, -1)) {
        error(line, what + ": needs a step to run when the condition holds");
        s->children.push_back(nullptr);
      } else {
        s->children.push_back(
            compile_step(lua_gettop(L_), line, s->path + "/", what + " " + branch + " branch"));
      }
      lua_pop(L_, 1);
    }
  }

  void compile_approve(int v, int line, const std::string& prefix, Step* s) {
    lua_getfield(L_, v, "id");
    if (check_id(lua_gettop(L_), line, "approve", &s->id)) s->path = prefix + s->id;
    lua_pop(L_, 1);
    std::string what = "approve '" + s->id + "'";
    lua_getfield(L_, v, "opts");
    int o = lua_gettop(L_);
    if (lua_isnil(L_, o)) {
      lua_pop(L_, 1);
      return;
    }
    if (!lua_istable(L_, o)) {
      error(line, what + ": options must be a table {message=, approvers=, timeout=, on_timeout=}");
      lua_pop(L_, 1);
      return;
    }
    check_keys(o, {"message", "approvers", "timeout", "on_timeout", "description"}, line, what);
    read_gate_options(o, line, what, &s->message, &s->approvers, &s->timeout_ms,
                      &s->approve_on_timeout);
    s->description = str_field(o, "description");
    lua_pop(L_, 1);
  }

  void compile_switch(int v, int line, const std::string& prefix, Step* s) {
    lua_getfield(L_, v, "id");
    if (check_id(lua_gettop(L_), line, "switch", &s->id)) s->path = prefix + s->id;
    lua_pop(L_, 1);
    std::string what = "switch '" + s->id + "'";
    lua_getfield(L_, v, "selector");
    if (lua_type(L_, -1) != LUA_TFUNCTION)
      error(line, what +
                      ": the selector must be a function(ctx, input) returning a case name, "
                      "got " +
                      describe_value(-1));
    else
      s->cond = LuaRef::at(L_, -1);
    lua_pop(L_, 1);
    lua_getfield(L_, v, "cases");
    int c = lua_gettop(L_);
    if (!lua_istable(L_, c)) {
      error(line, what + ": cases must be a table { name = step, ..., default = step }");
      lua_pop(L_, 1);
      return;
    }
    std::vector<std::string> keys;
    lua_pushnil(L_);
    while (lua_next(L_, c)) {
      lua_pop(L_, 1);
      if (lua_type(L_, -1) == LUA_TSTRING)
        keys.emplace_back(lua_tostring(L_, -1));
      else if (lua_type(L_, -1) == LUA_TNUMBER)
        keys.push_back(std::to_string(lua_tointeger(L_, -1)));
    }
    std::sort(keys.begin(), keys.end(), [](const std::string& a, const std::string& b) {
      if ((a == "default") != (b == "default")) return b == "default";
      return a < b;
    });
    if (keys.empty()) error(line, what + ": needs at least one case");
    for (const auto& k : keys) {
      lua_getfield(L_, c, k.c_str());
      if (lua_isnil(L_, -1)) {  // numeric key
        lua_pop(L_, 1);
        lua_pushnumber(L_, std::stod(k));
        lua_gettable(L_, c);
      }
      auto child = compile_step(lua_gettop(L_), line, s->path + "/", what + " case '" + k + "'");
      lua_pop(L_, 1);
      if (child) {
        s->children.push_back(std::move(child));
        s->case_keys.push_back(k);
      }
    }
    lua_pop(L_, 1);
  }

  lua_State* L_;
  std::string file_;
  Pipeline* p_;
  std::vector<Diagnostic>* diags_;
  std::unordered_map<std::string, int> ids_;
  RetryPolicy default_retry_;
  int64_t default_timeout_ = 0;
};

}  // namespace

bool compile_pipeline(lua_State* L, int idx, const std::string& file, Pipeline* out,
                      std::vector<Diagnostic>* diags) {
  size_t before = diags->size();
  std::vector<Diagnostic> mine;
  Compiler c(L, file, out, &mine);
  c.run(idx);
  // Sort by line so that the report reads top to bottom.
  std::stable_sort(mine.begin(), mine.end(),
                   [](const Diagnostic& a, const Diagnostic& b) { return a.line < b.line; });
  diags->insert(diags->end(), mine.begin(), mine.end());
  return diags->size() == before;
}

}  // namespace orch
