#include "engine/compile.h"

#include <algorithm>
#include <regex>
#include <unordered_map>
#include <utility>
#include <variant>

#include "base/cron.h"
#include "base/duration.h"
#include "base/secrets.h"
#include "bindings/convert.h"
#include "engine/steps/compiler.h"

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

// Makes *spec the (empty) spec of kind k.
template <size_t... I>
void set_kind(StepSpec* spec, size_t k, std::index_sequence<I...>) {
  ((k == I ? (void)spec->emplace<I>() : (void)0), ...);
}

}  // namespace

bool Compiler::run(int idx) {
  int top = lua_gettop(L_);
  idx = lua_absindex_compat(idx);
  compile_pipeline_table(idx);
  lua_settop(L_, top);
  return diags_->empty();
}

// Field helpers operating on the table at `t`.
std::string Compiler::str_field(int t, const char* k) {
  lua_getfield(L_, t, k);
  std::string s = lua_type(L_, -1) == LUA_TSTRING ? lua_tostring(L_, -1) : "";
  lua_pop(L_, 1);
  return s;
}

int Compiler::line_of(int t, int fallback) {
  lua_getfield(L_, t, "__line");
  int l = lua_isnumber(L_, -1) ? static_cast<int>(lua_tointeger(L_, -1)) : fallback;
  lua_pop(L_, 1);
  return l;
}

std::string Compiler::kind_of(int t) {
  if (!lua_istable(L_, t)) return "";
  return str_field(t, "__orch");
}

std::string Compiler::describe_value(int idx) {
  std::string k = kind_of(idx);
  if (!k.empty()) return "o." + k + "(...)";
  if (lua_istable(L_, idx)) return "a plain table";
  return std::string("a ") + luaL_typename(L_, idx);
}

bool Compiler::check_id(int idx, int line, const std::string& kind, std::string* out) {
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

void Compiler::compile_pipeline_table(int idx) {
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
      error(line,
            "pipeline name '" + p_->name + "' is invalid (use letters, digits, '_', '-' and '.')");
  }
  lua_pop(L_, 1);
  std::string what = "pipeline '" + p_->name + "'";
  check_keys(idx,
             {"description", "triggers", "defaults", "tags", "concurrency_key", "concurrency",
              "finally", "on"},
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
    if (!lua_isnil(L_, -1)) read_duration(-1, line, what + " defaults.timeout", &default_timeout_);
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
  root->spec = SeqSpec{};
  root->line = line;
  compile_children(idx, line, "", what, root.get(), true);
  if (root->children.empty() && count_array(idx) == 0)
    error(line, what + " has no steps; add at least one o.node(...)");
  p_->root = std::move(root);
  compile_hooks(idx, line, what);
  std::vector<Step*> hooks;
  for (auto& h : p_->hooks) hooks.push_back(h.step.get());
  link_graph(p_->root.get(), hooks);
}

void Compiler::compile_hooks(int idx, int line, const std::string& what) {
  auto one = [&](int v, const char* event, const std::string& where) {
    if (lua_type(L_, v) == LUA_TFUNCTION) {
      error(line, where + ": a hook is a step, e.g. o.node(\"notify\", function(ctx) ... end)");
      return;
    }
    auto st = compile_step(v, line, "", where);
    if (st) p_->hooks.push_back({event, std::move(st)});
  };
  lua_getfield(L_, idx, "finally");
  if (!lua_isnil(L_, -1)) one(lua_gettop(L_), "finally", what + " finally");
  lua_pop(L_, 1);
  lua_getfield(L_, idx, "on");
  int on = lua_gettop(L_);
  if (lua_istable(L_, on) && kind_of(on).empty()) {
    check_keys(on, {std::begin(kHookEvents), std::end(kHookEvents)}, line, what + " on");
    for (const char* ev : kHookEvents) {
      lua_getfield(L_, on, ev);
      if (!lua_isnil(L_, -1)) one(lua_gettop(L_), ev, what + " on." + ev);
      lua_pop(L_, 1);
    }
  } else if (!lua_isnil(L_, on)) {
    error(line, what + ": on must be a table { awaiting_approval = step, failed = step, " +
                    "succeeded = step, cancelled = step }, got " + describe_value(on));
  }
  lua_pop(L_, 1);
}

void Compiler::check_options(int line, const std::string& what, const json& spec,
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

void Compiler::compile_triggers(int t, int line) {
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
                    {"path", "secret", "signature_header", "dedup_header", "input", "auth"});
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
      if (spec.contains("auth")) {
        // For senders that cannot sign (Alertmanager, Grafana): a credential in the
        // Authorization header, the value a secret's, never the pipeline file's.
        const json& a = spec["auth"];
        const char* how =
            "o.webhook: 'auth' is { bearer = \"SECRET_NAME\" } or { basic = \"SECRET_NAME\" } "
            "(the secret holds the token, or user:password)";
        if (!a.is_object() || a.size() != 1 || (!a.contains("bearer") && !a.contains("basic"))) {
          std::string got = a.is_object() && a.size() == 1 ? "'" + a.begin().key() + "'"
                            : a.is_object()                ? std::to_string(a.size()) + " fields"
                                                           : std::string(a.type_name());
          error(tr.line, std::string(how) + ", got " + got);
        } else {
          const json& name = a.begin().value();
          if (!name.is_string() || !valid_secret_name(name.get<std::string>()))
            error(tr.line, "o.webhook: auth." + a.begin().key() +
                               " is the NAME of a secret (letters, digits, _; set as "
                               "ORCHRUN_SECRET_<NAME> or in the secrets file), got " +
                               (name.is_string() ? "'" + name.get<std::string>() + "'"
                                                 : std::string(name.type_name())));
        }
      }
    } else if (tr.type == "schedule") {
      check_options(tr.line, "o.schedule", spec, {"cron", "tz", "missed", "input"});
      // (value() would throw on a cron that is not a string: the check comes first)
      const bool cron_ok = !spec.contains("cron") || spec["cron"].is_string();
      if (!cron_ok)
        error(tr.line, "o.schedule: 'cron' must be a cron expression like \"0 2 * * *\", got " +
                           std::string(spec["cron"].type_name()));
      std::string cron =
          spec.contains("cron") && spec["cron"].is_string() ? spec["cron"].get<std::string>() : "";
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

int Compiler::find_line(const std::string& src, const std::string& word) {
  int line = 1;
  for (size_t i = 0; i < src.size(); i++) {
    if (src[i] == '\n') line++;
    if (src.compare(i, word.size(), word) == 0 && i > 0 && src[i - 1] == '.') return line;
  }
  return 0;
}

// Compiles the array part of table `t` as the children of `parent`.
void Compiler::compile_children(int t, int line, const std::string& prefix, const std::string& what,
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

std::unique_ptr<Step> Compiler::compile_step(int v, int parent_line, const std::string& prefix,
                                             const std::string& where) {
  std::string kind = kind_of(v);
  if (kind.empty() || kind == "pipeline" || kind == "trigger") {
    std::string hint = lua_istable(L_, v) && kind.empty()
                           ? "; wrap a list of steps in o.seq { ... }"
                       : lua_isnil(L_, v) ? " (is a variable undefined?)"
                                          : "";
    error(parent_line, where +
                           ": expected a step (o.node, o.seq, o.parallel, o.when, "
                           "o.switch, o.approve, o.map, o.loop, o.call, o.wait), got " +
                           describe_value(v) + hint);
    return nullptr;
  }
  int line = line_of(v, parent_line);
  auto s = std::make_unique<Step>();
  s->line = line;
  // The kinds in StepKind's order (the spec's index is the kind).
  using CompileKind = void (Compiler::*)(int, int, const std::string&, Step*);
  static const CompileKind kCompile[] = {&Compiler::compile_node,     &Compiler::compile_seq,
                                         &Compiler::compile_parallel, &Compiler::compile_when,
                                         &Compiler::compile_switch,   &Compiler::compile_approve,
                                         &Compiler::compile_map,      &Compiler::compile_loop,
                                         &Compiler::compile_call,     &Compiler::compile_wait};
  constexpr size_t kKinds = std::variant_size_v<StepSpec>;
  size_t k = 0;
  while (k < kKinds && kind != step_kind_name(static_cast<StepKind>(k))) k++;
  if (k == kKinds) {
    error(line, where + ": unknown step kind '" + kind + "'");
    return nullptr;
  }
  set_kind(&s->spec, k, std::make_index_sequence<kKinds>());
  (this->*kCompile[k])(v, line, prefix, s.get());
  read_flow_options(v, line, s.get());
  if (!s->path.empty()) p_->by_path[s->path] = s.get();
  return s;
}

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
