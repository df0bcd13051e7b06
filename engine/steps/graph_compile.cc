// The graph of a pipeline beyond its nesting: `after` (dependencies) and `trigger` (when a
// step with dependencies runs); and the checks of the whole graph once every step is
// compiled: unknown ids, dependencies on steps that may not have run, cycles.
#include <functional>

#include "engine/compile.h"
#include "engine/steps/compiler.h"

namespace orch {
namespace {

std::string name_of(const Step* s) {
  if (!s->id.empty()) return "'" + s->id + "'";
  return "the " + std::string(step_kind_name(s->kind())) + " at line " + std::to_string(s->line);
}

bool is_ancestor(const Step* a, const Step* d) {
  for (const Step* p = d->parent; p; p = p->parent)
    if (p == a) return true;
  return false;
}

void walk(Step* s, const std::function<void(Step*)>& fn) {
  if (!s) return;
  fn(s);
  for (auto& c : s->children) walk(c.get(), fn);
}

}  // namespace

void Compiler::read_flow_options(int v, int line, Step* s) {
  // Where the options are: a seq has them in its list of steps, the others in their options.
  const bool seq = s->kind() == StepKind::Seq;
  lua_getfield(L_, v, seq ? "children" : "opts");
  int o = lua_gettop(L_);
  if (!lua_istable(L_, o)) {
    lua_pop(L_, 1);
    return;
  }
  std::string what = "o." + std::string(step_kind_name(s->kind())) +
                     (s->id.empty() ? std::string() : " '" + s->id + "'");
  if (seq)
    check_keys(o, {std::begin(kFlowKeys), std::end(kFlowKeys)}, line,
               what + " (in a seq's list of steps, only these options may be given)", true);
  lua_getfield(L_, o, "after");
  if (!lua_isnil(L_, -1)) {
    s->has_after = true;
    int a = lua_gettop(L_);
    if (lua_type(L_, a) == LUA_TSTRING) {
      s->after.emplace_back(lua_tostring(L_, a));
    } else if (lua_istable(L_, a) && kind_of(a).empty()) {
      int n = count_array(a);
      for (int i = 1; i <= n; i++) {
        lua_rawgeti(L_, a, i);
        if (lua_type(L_, -1) == LUA_TSTRING)
          s->after.emplace_back(lua_tostring(L_, -1));
        else
          error(line, what + ": after[" + std::to_string(i) + "] must be the id of a step (a " +
                          "string), got " + describe_value(-1));
        lua_pop(L_, 1);
      }
    } else {
      error(line, what +
                      ": after must be a list of step ids, e.g. after = { \"build\", \"test\" }" +
                      ", got " + describe_value(a));
    }
  }
  lua_pop(L_, 1);
  lua_getfield(L_, o, "stage");
  if (!lua_isnil(L_, -1)) {
    std::string st = lua_type(L_, -1) == LUA_TSTRING ? lua_tostring(L_, -1) : "";
    bool ok = !st.empty() && st.size() <= 64 && isalpha(static_cast<unsigned char>(st[0]));
    for (char ch : st)
      ok = ok && (isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '-' || ch == '.');
    if (!ok)
      error(line, what + ": stage must be a name (a letter, then letters, digits, '_', '-', " +
                      "'.'; at most 64), got " +
                      (st.empty() ? describe_value(-1) : "'" + st + "'"));
    else
      s->stage = st;
  }
  lua_pop(L_, 1);
  lua_getfield(L_, o, "trigger");
  if (!lua_isnil(L_, -1)) {
    s->trigger_line = line;
    std::string t = lua_type(L_, -1) == LUA_TSTRING ? lua_tostring(L_, -1) : "";
    if (!parse_trigger_rule(t, &s->trigger)) {
      std::vector<std::string> names = {"success", "failure", "always", "one_failed",
                                        "one_success"};
      std::string hint = t.empty() ? "" : did_you_mean(t, names);
      error(line, what + ": trigger must be \"success\", \"failure\", \"always\", \"one_failed\" " +
                      "or \"one_success\", got " +
                      (t.empty() ? describe_value(-1) : "'" + t + "'") +
                      (hint.empty() ? "" : " (did you mean '" + hint + "'?)"));
    }
  }
  lua_pop(L_, 1);
  lua_pop(L_, 1);
}

void Compiler::link_graph(Step* root, const std::vector<Step*>& hooks) {
  // Parents, and every step with an id.
  std::unordered_map<std::string, Step*> by_id;
  std::vector<Step*> all;
  std::function<void(Step*, Step*)> link = [&](Step* s, Step* parent) {
    s->parent = parent;
    all.push_back(s);
    if (!s->id.empty()) by_id[s->id] = s;
    for (auto& c : s->children)
      if (c) link(c.get(), s);
  };
  link(root, nullptr);
  for (Step* h : hooks) link(h, nullptr);
  std::vector<std::string> ids;
  for (auto& [id, st] : by_id) ids.push_back(id);
  std::sort(ids.begin(), ids.end());

  for (Step* s : all) {
    std::string what = "o." + std::string(step_kind_name(s->kind())) +
                       (s->id.empty() ? std::string() : " '" + s->id + "'");
    if (s->trigger_line && !s->has_after) {
      error(s->line, what + ": trigger = \"" + trigger_rule_name(s->trigger) +
                         "\" needs after = { ... }: the steps whose outcome it follows");
      continue;
    }
    if (!s->has_after) continue;
    if (s->after.empty() && s->trigger != TriggerRule::Success)
      error(s->line, what + ": trigger = \"" + trigger_rule_name(s->trigger) +
                         "\" needs at least one step in after");
    const Step* list = s->parent;
    if (!list || (list->kind() != StepKind::Seq && list->kind() != StepKind::Parallel)) {
      error(s->line, what + ": after applies to a step in a list (the pipeline's steps, a seq " +
                         "or a parallel); this one is " +
                         (list ? "the " + std::string(step_kind_name(list->kind())) + " " +
                                     name_of(list) + "'s body"
                               : std::string("a hook of the pipeline")) +
                         "; wrap it: o.seq { step }");
      continue;
    }
    if (list->kind() == StepKind::Parallel && list->parallel().join != 0)
      error(s->line, what + ": after cannot be combined with the join of parallel " +
                         name_of(list) + " (a graph of branches joins them all)");
    for (const auto& id : s->after) {
      auto it = by_id.find(id);
      if (it == by_id.end()) {
        std::string hint = did_you_mean(id, ids);
        error(s->line, what + ": after names '" + id + "', which is not a step of this pipeline" +
                           (hint.empty() ? "" : " (did you mean '" + hint + "'?)"));
        continue;
      }
      Step* d = it->second;
      if (d == s) {
        error(s->line, what + ": a step cannot run after itself (dependency cycle: " + name_of(s) +
                           " -> " + name_of(s) + ")");
        continue;
      }
      if (is_ancestor(d, s) || is_ancestor(s, d)) {
        error(s->line, what + ": after names " + name_of(d) + ", which " +
                           (is_ancestor(d, s) ? "contains it" : "is inside it") +
                           ": a step cannot wait for a step that waits for it (dependency cycle)");
        continue;
      }
      // Between the common ancestor and d: only lists, whose steps run once each.
      const Step* lca = s->parent;
      while (lca && !is_ancestor(lca, d)) lca = lca->parent;
      bool reachable = true;
      for (const Step* p = d->parent; p && p != lca && reachable; p = p->parent) {
        std::string why;
        switch (p->kind()) {
          case StepKind::When:
          case StepKind::Switch:
            why = "inside " + std::string(step_kind_name(p->kind())) + " " + name_of(p) +
                  ", whose branch may not be taken";
            break;
          case StepKind::Map:
            why = "inside map " + name_of(p) + ", where it runs once per item";
            break;
          case StepKind::Loop:
            why = "inside loop " + name_of(p) + ", where it runs once per iteration";
            break;
          default:
            break;
        }
        if (!why.empty()) {
          error(s->line, what + ": after names " + name_of(d) + ", which is " + why +
                             "; depend on " + name_of(p) + " instead");
          reachable = false;
        }
      }
      if (!reachable) continue;
      if (!lca) {
        error(s->line, what + ": after names " + name_of(d) +
                           ", which is in another part of the pipeline (a hook)");
        continue;
      }
      if (std::find(s->deps.begin(), s->deps.end(), d) == s->deps.end()) s->deps.push_back(d);
      d->depended_on = true;
      s->parent->graph_list = true;
    }
  }
  if (!diags_->empty()) return;

  // Cycles: an event graph with the start (2i) and the end (2i+1) of every step. An edge
  // u -> v says u happens before v; a cycle is a run that would wait forever.
  enum EdgeKind { Inside, Contains, WaitsFor, Follows, Self };
  struct Edge {
    int to;
    EdgeKind kind;
  };
  std::unordered_map<const Step*, int> index;
  for (size_t i = 0; i < all.size(); i++) index[all[i]] = static_cast<int>(i);
  std::vector<std::vector<Edge>> g(all.size() * 2);
  auto S = [&](const Step* s) { return 2 * index[s]; };
  auto E = [&](const Step* s) { return 2 * index[s] + 1; };
  for (Step* s : all) {
    g[S(s)].push_back({E(s), Self});
    const Step* prev = nullptr;
    for (auto& c : s->children) {
      if (!c) continue;
      g[S(s)].push_back({S(c.get()), Inside});
      g[E(c.get())].push_back({E(s), Contains});
      if (s->kind() == StepKind::Seq && prev && !c->has_after)
        g[E(prev)].push_back({S(c.get()), Follows});
      prev = c.get();
    }
    for (Step* d : s->deps) g[E(d)].push_back({S(s), WaitsFor});
  }
  std::vector<int> color(g.size(), 0), parent(g.size(), -1);
  std::vector<EdgeKind> via(g.size(), Self);
  std::vector<std::pair<int, EdgeKind>> cycle;  // (event, the edge into it)
  // Depth first, with a stack of its own (a seq of many steps is a path as long as the
  // pipeline: recursion would overflow the C stack).
  std::vector<std::pair<int, size_t>> stack;  // (event, its next edge to look at)
  for (size_t root = 0; root < g.size() && cycle.empty(); root++) {
    if (color[root] != 0) continue;
    color[root] = 1;
    stack.push_back({static_cast<int>(root), 0});
    while (!stack.empty() && cycle.empty()) {
      auto& [u, next] = stack.back();
      if (next == g[u].size()) {
        color[u] = 2;
        stack.pop_back();
        continue;
      }
      const Edge& e = g[u][next++];
      if (color[e.to] == 1) {
        cycle.push_back({e.to, e.kind});
        for (int x = u; x != e.to; x = parent[x]) cycle.push_back({x, via[x]});
      } else if (color[e.to] == 0) {
        parent[e.to] = u;
        via[e.to] = e.kind;
        color[e.to] = 1;
        stack.push_back({e.to, 0});
      }
    }
  }
  if (cycle.empty()) return;
  // `cycle` runs backwards along the edges: each entry is an event and how the event before
  // it (the next entry) leads to it; read in this order, each step waits for the next.
  std::string msg;
  const Step* first = nullptr;
  for (size_t i = 0; i < cycle.size(); i++) {
    const Step* at = all[cycle[i].first / 2];
    const Step* from = all[cycle[(i + 1) % cycle.size()].first / 2];
    const char* how = nullptr;
    switch (cycle[i].second) {
      case WaitsFor:
        how = "waits for";
        break;
      case Follows:
        how = "follows";
        break;
      case Inside:
        how = "is inside";
        break;
      case Contains:
        how = "contains";
        break;
      case Self:
        break;
    }
    if (!how) continue;
    if (!first) {
      first = at;
      msg = name_of(at);
    } else {
      msg += ", which";
    }
    msg += std::string(" ") + how + " " + name_of(from);
  }
  const Step* where = first ? first : all[cycle[0].first / 2];
  error(where->line, "dependency cycle: " + msg + " (no step of it could ever start)");
}

}  // namespace orch
