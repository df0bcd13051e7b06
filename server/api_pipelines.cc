// The API of pipelines: the list, one pipeline (versions, loads, its graph), validate.
#include <cerrno>
#include <cstring>

#include "engine/graph.h"
#include "server/api_call.h"

namespace orch {

using http::error_response;
using http::Response;

namespace {

json graph_json(const Step* s) {
  json j{{"kind", step_kind_name(s->kind())}, {"line", s->line}};
  if (!s->id.empty()) j["id"] = s->id;
  if (!s->path.empty()) j["path"] = s->path;
  if (!s->description.empty()) j["description"] = s->description;
  if (s->kind() == StepKind::Node) {
    if (s->node().retry.max_attempts > 1) j["retry"] = s->node().retry.max_attempts;
    if (s->node().timeout_ms) j["timeout_ms"] = s->node().timeout_ms;
    if (s->node().optional) j["optional"] = true;
  }
  if (s->kind() == StepKind::Call) j["call"] = s->call().target;
  if (s->kind() == StepKind::Wait) j["signal"] = s->wait().signal;
  if (s->has_after) {
    j["after"] = s->after;
    j["trigger"] = trigger_rule_name(s->trigger);
  }
  if (!s->stage.empty()) j["stage"] = s->stage;
  if (s->kind() == StepKind::Switch && !s->switch_().case_keys.empty())
    j["cases"] = s->switch_().case_keys;
  json kids = json::array();
  for (auto& c : s->children) kids.push_back(c ? graph_json(c.get()) : json(nullptr));
  if (!kids.empty()) j["children"] = kids;
  return j;
}

json pipeline_json(const ServerContext& c, const PipelineEntry& e) {
  json j{{"name", e.name}, {"file", e.file}, {"active", e.active != nullptr}};
  if (e.removed) j["removed"] = true;
  if (e.active) {
    const Pipeline& p = *e.active;
    j["version"] = e.version;
    j["sha256"] = p.sha256;
    j["loaded_at"] = iso8601_ms(e.loaded_at);
    if (!p.description.empty()) j["description"] = p.description;
    j["tags"] = p.tags;
    j["nodes"] = p.node_count;
    json trig = json::array();
    for (auto& t : p.triggers) {
      json x = parse_json(t.spec, nullptr);
      if (!x.is_object()) x = json::object();
      x["type"] = t.type;
      x["line"] = t.line;
      if (t.type == "schedule")
        for (auto& sc : c.schedules)
          if (sc.pipeline == p.name && sc.key == t.spec && sc.next_fire > 0)
            x["next_fire"] = iso8601_ms(sc.next_fire);
      trig.push_back(x);
    }
    j["triggers"] = trig;
  }
  j["error"] =
      e.error.empty() ? json(nullptr) : json{{"message", e.error}, {"at", iso8601_ms(e.error_at)}};
  return j;
}

Response validate_answer(const Pipeline* p, const std::vector<Diagnostic>& diags) {
  if (!p) {
    json errs = json::array();
    for (auto& d : diags) {
      json x{{"file", d.file}, {"line", d.line}, {"message", d.message}};
      if (d.column > 0) x["column"] = d.column;  // a JSON definition's errors
      errs.push_back(std::move(x));
    }
    return Response::json(422, dump_json(json{{"valid", false}, {"errors", errs}}));
  }
  json trig = json::array();
  for (auto& t : p->triggers) {
    json x = parse_json(t.spec, nullptr);
    x["type"] = t.type;
    trig.push_back(x);
  }
  return Response::json(200, dump_json(json{{"valid", true},
                                            {"name", p->name},
                                            {"nodes", p->node_count},
                                            {"sha256", p->sha256},
                                            {"triggers", trig}}));
}

}  // namespace

void api_list_pipelines(ApiCall& call) {
  ServerContext& c = call.c;
  json arr = json::array();
  for (auto& [f, e] : c.registry->entries()) arr.push_back(pipeline_json(c, e));
  call.ok(200, {{"pipelines", arr}, {"dir", c.registry->dir()}});
}

void api_get_pipeline(ApiCall& call) {
  ServerContext& c = call.c;
  const std::string& name = call.params.get("name");
  const PipelineEntry* e = c.registry->by_name(name);
  if (!e) return call.fail(404, "not_found", "no pipeline '" + name + "' in " + c.registry->dir());
  json j = pipeline_json(c, *e);
  json versions = json::array();
  for (auto& d : c.store->definitions(e->name))
    versions.push_back({{"version", d.version},
                        {"sha256", d.sha256},
                        {"loaded_at", iso8601_ms(d.loaded_at)},
                        {"path", d.path},
                        {"active", e->active && d.version == e->version}});
  j["versions"] = versions;
  json loads = json::array();
  for (auto& l : c.store->loads(e->active ? e->name : "", e->file, 20)) {
    json x{{"at", iso8601_ms(l.at)}, {"outcome", l.outcome}, {"file", l.path}};
    if (l.version) x["version"] = l.version;
    if (!l.error.empty()) x["error"] = l.error;
    loads.push_back(x);
  }
  j["loads"] = loads;
  if (e->active) {
    j["graph"] = graph_json(e->active->root.get());
    json hooks = json::object();
    for (const auto& h : e->active->hooks) hooks[h.event] = graph_json(h.step.get());
    if (!hooks.empty()) j["hooks"] = hooks;
  }
  call.ok(200, j);
}

void api_validate_pipeline(ApiCall& call) {
  ServerContext& c = call.c;
  const std::string& name = call.params.get("name");
  const PipelineEntry* e = c.registry->by_name(name);
  std::string source = call.rq.body;
  // A new pipeline's source tells its language: '{' cannot start a Lua chunk, and always starts
  // a JSON definition.
  size_t first = source.find_first_not_of(" \t\r\n");
  bool json_src = first != std::string::npos && source[first] == '{';
  std::string file = e ? e->file : c.registry->dir() + "/" + name + (json_src ? ".json" : ".lua");
  if (source.empty()) {
    if (!e) return call.fail(404, "not_found", "no pipeline '" + name + "'; send its source");
    FILE* f = fopen(file.c_str(), "rb");
    if (!f) return call.fail(404, "not_found", "cannot read " + file + ": " + strerror(errno));
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) source.append(buf, n);
    fclose(f);
  }
  // Off the loop: a source that computes at its top level must not hold the server.
  ServerContext* cp = &c;
  auto ex = call.ex;
  bool started =
      c.registry->check_async(file, std::move(source),
                              [cp, ex](std::unique_ptr<Pipeline> p, std::vector<Diagnostic> diags) {
                                cp->answer(ex, validate_answer(p.get(), diags));
                              });
  if (!started) {
    Response r = error_response(503, "busy",
                                std::to_string(Registry::kMaxChecks) +
                                    " validations are running already; try again in a few seconds");
    r.headers.emplace_back("Retry-After", "2");
    call.reply(std::move(r));
  }
}

}  // namespace orch
