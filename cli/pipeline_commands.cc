// orchrun validate and orchrun graph: pipelines without running them.
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/duration.h"
#include "base/ids.h"
#include "base/json_util.h"
#include "cli/common.h"
#include "cli/format.h"
#include "cli/live_view.h"
#include "drivers/loop.h"
#include "drivers/signals.h"
#include "engine/pipeline_loader.h"
#include "engine/scheduler.h"
#include "store/store.h"

namespace orch::cli {
namespace {

// --- validate -----------------------------------------------------------------------------

}  // namespace

int cmd_validate(const Args& a) {
  Style est = style_for(stderr);
  Style ost = style_for(stdout);
  if (a.positional.empty()) {
    fprintf(stderr, "usage: orchrun validate FILE...\n");
    return kExitUsage;
  }
  LoadOptions lo;
  if (!load_options(a, &lo)) return kExitUsage;
  std::string err;
  bool json_out = a.has("--json");
  json report = json::array();
  int bad = 0;
  for (const auto& f : a.positional) {
    std::vector<Diagnostic> diags;
    auto p = load_pipeline_file(f, lo, &diags);
    if (json_out) {
      json e{{"file", f}, {"valid", p != nullptr}};
      if (p) {
        e["pipeline"] = p->name;
        e["nodes"] = p->node_count;
        e["sha256"] = p->sha256;
      }
      json errs = json::array();
      for (auto& d : diags) {
        json x{{"file", d.file}, {"line", d.line}, {"message", d.message}};
        if (d.column > 0) x["column"] = d.column;  // a JSON definition's errors
        errs.push_back(std::move(x));
      }
      e["errors"] = errs;
      report.push_back(e);
    } else if (p) {
      printf("%s %s: pipeline '%s', %d node%s\n", ost.green("✓").c_str(), f.c_str(),
             p->name.c_str(), p->node_count, p->node_count == 1 ? "" : "s");
    } else {
      print_diags(diags, est);
    }
    if (!p) bad++;
  }
  if (json_out)
    printf("%s\n", dump_json(report, 2).c_str());
  else if (bad)
    fprintf(stderr, "%d of %zu file%s invalid\n", bad, a.positional.size(),
            a.positional.size() == 1 ? "" : "s");
  return bad ? kExitUsage : kExitOk;
}

// --- graph --------------------------------------------------------------------------------

// Where each step drawn so far is entered and left, for the edges of `after` (drawn last:
// a step may depend on one drawn after it).
using Ends =
    std::unordered_map<const Step*, std::pair<std::vector<std::string>, std::vector<std::string>>>;
Ends* g_ends = nullptr;

void graph_mermaid_kind(const Step* s, std::string* out, std::vector<std::string>* entry,
                        std::vector<std::string>* exit, int* anon);

void graph_mermaid(const Step* s, std::string* out, std::vector<std::string>* entry,
                   std::vector<std::string>* exit, int* anon) {
  graph_mermaid_kind(s, out, entry, exit, anon);
  if (g_ends) (*g_ends)[s] = {*entry, *exit};
}

// Children of a graph list that nothing in the list follows: where the list is left.
std::vector<bool> followed(const Step* s) {
  std::vector<bool> f(s->children.size(), false);
  for (size_t i = 0; i < s->children.size(); i++) {
    const Step* c = s->children[i].get();
    if (!c->has_after) {
      if (s->kind() == StepKind::Seq && i > 0) f[i - 1] = true;
      continue;
    }
    for (const Step* d : c->deps)
      for (size_t j = 0; j < s->children.size(); j++)
        if (s->children[j].get() == d) f[j] = true;
  }
  return f;
}

// The edges of `after`, labelled with their rule unless it is "success".
void graph_dependencies(const Step* s, std::string* out) {
  for (const Step* d : s->deps) {
    const auto& from = (*g_ends)[d].second;
    const auto& to = (*g_ends)[s].first;
    std::string arrow = s->trigger == TriggerRule::Success
                            ? " --> "
                            : std::string(" -- ") + trigger_rule_name(s->trigger) + " --> ";
    for (const auto& f : from)
      for (const auto& t : to) *out += "  " + f + arrow + t + "\n";
  }
  for (const auto& c : s->children)
    if (c) graph_dependencies(c.get(), out);
}

void graph_mermaid_kind(const Step* s, std::string* out, std::vector<std::string>* entry,
                        std::vector<std::string>* exit, int* anon) {
  auto nid = [](const std::string& path) {
    std::string r = "n_";
    for (char c : path) r += isalnum(static_cast<unsigned char>(c)) ? c : '_';
    return r;
  };
  switch (s->kind()) {
    case StepKind::Approve: {
      std::string id = nid(s->path);
      *out += "  " + id + "[/\"approve: " + s->id + "\"/]\n";
      *entry = {id};
      *exit = {id};
      return;
    }
    case StepKind::Wait: {
      std::string id = nid(s->path);
      *out += "  " + id + "[/\"wait: " + s->id +
              (s->wait().signal == s->id ? "" : " (signal " + s->wait().signal + ")") + "\"/]\n";
      *entry = {id};
      *exit = {id};
      return;
    }
    case StepKind::Node: {
      std::string id = nid(s->path);
      *out += "  " + id + "[\"" + s->id + "\"]\n";
      *entry = {id};
      *exit = {id};
      return;
    }
    case StepKind::Seq: {
      std::vector<std::string> prev;
      bool first = true;
      std::vector<bool> f = followed(s);
      for (size_t i = 0; i < s->children.size(); i++) {
        const Step* c = s->children[i].get();
        std::vector<std::string> en, ex;
        graph_mermaid(c, out, &en, &ex, anon);
        if (first || (c->has_after && c->deps.empty()))
          entry->insert(entry->end(), en.begin(), en.end());
        if (!c->has_after)
          for (auto& p : prev)
            for (auto& e : en) *out += "  " + p + " --> " + e + "\n";
        prev = ex;
        first = false;
        if (s->graph_list && !f[i]) exit->insert(exit->end(), ex.begin(), ex.end());
      }
      if (!s->graph_list) *exit = prev;
      return;
    }
    case StepKind::Parallel: {
      std::string fork = nid(s->path) + "_fork", join = nid(s->path) + "_join";
      std::string how = s->parallel().join == 0  ? "all"
                        : s->parallel().join < 0 ? "any"
                                                 : std::to_string(s->parallel().join);
      *out += "  " + fork + "{{\"" + s->id + "\"}}\n";
      *out += "  " + join + "((\"join " + how + "\"))\n";
      std::vector<bool> f = followed(s);
      for (size_t i = 0; i < s->children.size(); i++) {
        const Step* c = s->children[i].get();
        std::vector<std::string> en, ex;
        graph_mermaid(c, out, &en, &ex, anon);
        if (!c->has_after || c->deps.empty())
          for (auto& e : en) *out += "  " + fork + " --> " + e + "\n";
        if (!f[i])
          for (auto& e : ex) *out += "  " + e + " --> " + join + "\n";
      }
      *entry = {fork};
      *exit = {join};
      return;
    }
    case StepKind::Call: {
      std::string id = nid(s->path);
      *out += "  " + id + "[[\"" + s->id + ": call " + s->call().target + "\"]]\n";
      *entry = {id};
      *exit = {id};
      return;
    }
    case StepKind::Map:
    case StepKind::Loop: {
      bool map = s->kind() == StepKind::Map;
      std::string head = nid(s->path) + (map ? "_map" : "_loop");
      const Step* body = s->children.empty() ? nullptr : s->children[0].get();
      std::string label =
          map ? s->id + ": for each item" +
                    (s->map().max_concurrency ? ", max " + std::to_string(s->map().max_concurrency)
                                              : std::string())
              : s->id + ": loop, max " + std::to_string(s->loop().max_iterations);
      *out += "  " + head + "{{\"" + label + "\"}}\n";
      *entry = {head};
      if (!body || (body->kind() == StepKind::Node && body->id.empty())) {
        *exit = {head};  // a function body: the map/loop node is the whole story
        return;
      }
      std::vector<std::string> en, ex;
      graph_mermaid(body, out, &en, &ex, anon);
      for (auto& e : en) *out += "  " + head + " --> " + e + "\n";
      if (map) {
        std::string join = nid(s->path) + "_gather";
        *out += "  " + join + "((\"gather\"))\n";
        for (auto& e : ex) *out += "  " + e + " --> " + join + "\n";
        *exit = {join};
      } else {
        for (auto& e : ex) *out += "  " + e + " -. again .-> " + head + "\n";
        *exit = ex;
      }
      return;
    }
    case StepKind::When:
    case StepKind::Switch: {
      std::string dec = nid(s->path) + "_decide";
      *out += "  " + dec + "{\"" + s->id + "?\"}\n";
      *entry = {dec};
      exit->clear();
      bool has_else = true;
      for (size_t i = 0; i < s->children.size(); i++) {
        std::string label =
            s->kind() == StepKind::When ? (i == 0 ? "then" : "else") : s->switch_().case_keys[i];
        if (!s->children[i]) {
          has_else = false;
          continue;
        }
        std::vector<std::string> en, ex;
        graph_mermaid(s->children[i].get(), out, &en, &ex, anon);
        for (auto& e : en) *out += "  " + dec + " -- " + label + " --> " + e + "\n";
        exit->insert(exit->end(), ex.begin(), ex.end());
      }
      if (!has_else) exit->push_back(dec);
      return;
    }
  }
}

int cmd_graph(const Args& a) {
  if (a.positional.size() != 1) {
    fprintf(stderr, "usage: orchrun graph FILE [--format mermaid|dot]\n");
    return kExitUsage;
  }
  std::string fmt = a.get("--format", "mermaid");
  if (fmt != "mermaid" && fmt != "dot") {
    fprintf(stderr, "orchrun: --format must be mermaid or dot\n");
    return kExitUsage;
  }
  LoadOptions lo;
  if (!load_options(a, &lo)) return kExitUsage;
  std::string err;
  std::vector<Diagnostic> diags;
  auto p = load_pipeline_file(a.positional[0], lo, &diags);
  if (!p) {
    print_diags(diags, style_for(stderr));
    return kExitUsage;
  }
  std::string body;
  std::vector<std::string> en, ex;
  int anon = 0;
  Ends ends;
  g_ends = &ends;
  graph_mermaid(p->root.get(), &body, &en, &ex, &anon);
  graph_dependencies(p->root.get(), &body);
  // The hooks, each on its own: they run when the run reaches their state.
  for (const auto& h : p->hooks) {
    std::string head = "hook_" + h.event;
    body += "  " + head + "([\"on " + h.event + "\"])\n";
    std::vector<std::string> hen, hex;
    graph_mermaid(h.step.get(), &body, &hen, &hex, &anon);
    for (auto& e : hen) body += "  " + head + " --> " + e + "\n";
  }
  g_ends = nullptr;
  if (fmt == "mermaid") {
    printf("flowchart TD\n  start([\"%s\"])\n%s", p->name.c_str(), body.c_str());
    for (auto& e : en) printf("  start --> %s\n", e.c_str());
  } else {
    // The Mermaid edges translate directly to DOT.
    printf("digraph \"%s\" {\n  rankdir=TB;\n", p->name.c_str());
    std::stringstream ss(body);
    std::string line;
    while (std::getline(ss, line)) {
      auto arrow = line.find(" --> ");
      auto lab = line.find(" -- ");
      if (arrow != std::string::npos && lab != std::string::npos && lab < arrow) {
        std::string from = line.substr(2, lab - 2);
        std::string label = line.substr(lab + 4, arrow - lab - 4);
        printf("  %s -> %s [label=\"%s\"];\n", from.c_str(), line.substr(arrow + 5).c_str(),
               label.c_str());
      } else if (arrow != std::string::npos) {
        printf("  %s -> %s;\n", line.substr(2, arrow - 2).c_str(), line.substr(arrow + 5).c_str());
      } else {
        auto q1 = line.find('"'), q2 = line.rfind('"');
        auto sp = line.find_first_of("[{(", 2);
        if (q1 != std::string::npos && q2 > q1 && sp != std::string::npos)
          printf("  %s [label=\"%s\"];\n", line.substr(2, sp - 2).c_str(),
                 line.substr(q1 + 1, q2 - q1 - 1).c_str());
      }
    }
    printf("}\n");
  }
  return kExitOk;
}

}  // namespace orch::cli
