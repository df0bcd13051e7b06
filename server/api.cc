#include "server/api.h"

#include <openssl/evp.h>
#include <unistd.h>

#include <cstring>
#include <ctime>

#include "base/duration.h"
#include "base/ids.h"
#include "base/json_util.h"
#include "drivers/procs.h"
#include "engine/control.h"
#include "engine/orphans.h"
#include "engine/run_json.h"
#include "server/server.h"
#include "server/sse.h"

namespace orch {

// --- cursors and times -----------------------------------------------------------------------

std::string encode_cursor(int64_t created_at, const std::string& id) {
  std::string raw = std::to_string(created_at) + ":" + id;
  std::string out(4 * ((raw.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(raw.data()),
                          static_cast<int>(raw.size()));
  out.resize(static_cast<size_t>(n));
  while (!out.empty() && out.back() == '=') out.pop_back();
  for (auto& c : out) c = c == '+' ? '-' : c == '/' ? '_' : c;
  return out;
}

bool decode_cursor(const std::string& cursor, int64_t* created_at, std::string* id) {
  if (cursor.empty() || cursor.size() > 200) return false;
  std::string b = cursor;
  for (auto& c : b) {
    if (c == '-')
      c = '+';
    else if (c == '_')
      c = '/';
    else if (!isalnum(static_cast<unsigned char>(c)))
      return false;
  }
  while (b.size() % 4) b += '=';
  std::string raw(b.size(), '\0');
  int n =
      EVP_DecodeBlock(reinterpret_cast<unsigned char*>(raw.data()),
                      reinterpret_cast<const unsigned char*>(b.data()), static_cast<int>(b.size()));
  if (n < 0) return false;
  raw.resize(static_cast<size_t>(n));
  while (!raw.empty() && raw.back() == '\0') raw.pop_back();  // padding decodes to zeros
  size_t colon = raw.find(':');
  // created_at is unix ms: at most 15 digits (as for ?since=), so std::stoll cannot throw.
  if (colon == std::string::npos || colon == 0 || colon > 15 || colon + 1 >= raw.size())
    return false;
  for (size_t i = 0; i < colon; i++)
    if (!isdigit(static_cast<unsigned char>(raw[i]))) return false;
  *id = raw.substr(colon + 1);
  for (char c : *id)
    if (!isalnum(static_cast<unsigned char>(c))) return false;
  *created_at = std::stoll(raw.substr(0, colon));
  return *created_at > 0;
}

namespace {

using http::error_response;
using http::Response;
using Ex = std::shared_ptr<http::Exchange>;

json graph_json(const Step* s) {
  json j{{"kind", step_kind_name(s->kind)}, {"line", s->line}};
  if (!s->id.empty()) j["id"] = s->id;
  if (!s->path.empty()) j["path"] = s->path;
  if (!s->description.empty()) j["description"] = s->description;
  if (s->kind == StepKind::Node) {
    if (s->retry.max_attempts > 1) j["retry"] = s->retry.max_attempts;
    if (s->timeout_ms) j["timeout_ms"] = s->timeout_ms;
    if (s->optional) j["optional"] = true;
  }
  if (s->kind == StepKind::Call) j["call"] = s->call_target;
  if (!s->case_keys.empty()) j["cases"] = s->case_keys;
  json kids = json::array();
  for (auto& c : s->children) kids.push_back(c ? graph_json(c.get()) : json(nullptr));
  if (!kids.empty()) j["children"] = kids;
  return j;
}

std::string csv_field(const std::string& v) {
  bool quote = v.find_first_of(",\"\r\n") != std::string::npos;
  // A leading =, +, - or @ would be a formula in a spreadsheet: quote it and prefix a quote.
  bool formula = !v.empty() && (v[0] == '=' || v[0] == '+' || v[0] == '-' || v[0] == '@');
  if (!quote && !formula) return v;
  std::string out = "\"";
  if (formula) out += '\'';
  for (char c : v) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

}  // namespace

class ApiImpl {
 public:
  ApiImpl(Server& s, Ex ex) : s_(s), ex_(std::move(ex)), rq_(ex_->request()) {}

  void run() {
    const std::string& path = rq_.path;
    if (path == "/healthz") return (void)only("GET", [&] { healthz(); });
    if (path == "/metrics") return (void)(authed(false) && only("GET", [&] { metrics(); }));
    if (path.rfind("/api/", 0) != 0)
      return fail(404, "not_found", "no route " + rq_.method + " " + path);
    std::vector<std::string> seg;
    size_t i = 5;
    while (i <= path.size()) {
      size_t j = path.find('/', i);
      if (j == std::string::npos) j = path.size();
      seg.push_back(path.substr(i, j - i));
      i = j + 1;
    }
    if (seg.size() == 1 && seg[0] == "pipelines")
      return (void)(authed(false) && only("GET", [&] { list_pipelines(); }));
    if (seg.size() == 2 && seg[0] == "pipelines")
      return (void)(authed(false) && only("GET", [&] { get_pipeline(seg[1]); }));
    if (seg.size() == 3 && seg[0] == "pipelines" && seg[2] == "validate")
      return (void)(authed(true) && only("POST", [&] { validate(seg[1]); }));
    if (seg.size() == 3 && seg[0] == "pipelines" && seg[2] == "runs")
      return (void)(authed(true) && only("POST", [&] { start_run(seg[1]); }));
    if (seg.size() == 1 && seg[0] == "runs")
      return (void)(authed(false) && only("GET", [&] { list_runs(false); }));
    if (seg.size() == 1 && seg[0] == "runs.csv")
      return (void)(authed(false) && only("GET", [&] { list_runs(true); }));
    if (seg.size() == 2 && seg[0] == "runs")
      return (void)(authed(false) && only("GET", [&] { get_run(seg[1]); }));
    if (seg.size() == 3 && seg[0] == "runs" && seg[2] == "cancel")
      return (void)(authed(true) && only("POST", [&] { cancel(seg[1]); }));
    if (seg.size() == 3 && seg[0] == "runs" && seg[2] == "retry")
      return (void)(authed(true) && only("POST", [&] { retry(seg[1]); }));
    if (seg.size() >= 4 && seg[0] == "runs" && seg[2] == "approvals") {
      std::string node = path.substr(path.find("/approvals/") + 11);
      return (void)(authed(true) && only("POST", [&] { decide(seg[1], node); }));
    }
    if (seg.size() == 1 && seg[0] == "events")
      return (void)(authed(false) && only("GET", [&] { events(); }));
    fail(404, "not_found", "no route " + rq_.method + " " + path);
  }

 private:
  // --- plumbing ---
  void reply(Response r) { Api::answer(s_, ex_, std::move(r)); }
  void fail(int status, const char* code, const std::string& msg) {
    reply(error_response(status, code, msg));
  }
  void ok(int status, const json& j) { reply(Response::json(status, dump_json(j))); }
  bool authed(bool state_changing) {
    if (s_.authorized(rq_, state_changing)) return true;
    Response r = error_response(
        401, "unauthorized",
        s_.opts_.token.empty()
            ? "this call changes state; it is only allowed from loopback without a token"
            : "missing or wrong bearer token (Authorization: Bearer ...)");
    r.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"orchrun\"");
    reply(std::move(r));
    return false;
  }
  template <typename F>
  bool only(const char* method, F f) {
    bool head = rq_.method == "HEAD" && std::string(method) == "GET";
    if (rq_.method != method && !head) {
      Response r =
          error_response(405, "method_not_allowed",
                         rq_.method + " is not allowed on " + rq_.path + "; use " + method);
      r.headers.emplace_back("Allow", method);
      reply(std::move(r));
      return false;
    }
    f();
    return true;
  }
  // The request body as a JSON object ({} when empty). False (answered) when it is not one.
  bool body_object(json* out) {
    if (rq_.body.empty() || rq_.body.find_first_not_of(" \t\r\n") == std::string::npos) {
      *out = json::object();
      return true;
    }
    std::string err;
    *out = parse_json(rq_.body, &err, kMaxJsonDepth);  // deeper is a 400, before any copy
    if (out->is_discarded()) {
      fail(400, "invalid_json", "the body is not valid JSON: " + err);
      return false;
    }
    if (!out->is_object()) {
      fail(400, "invalid_body",
           std::string("the body must be a JSON object, got ") + out->type_name());
      return false;
    }
    return true;
  }
  bool string_field(const json& body, const char* key, std::string* out, bool required) {
    if (!body.contains(key) || body[key].is_null()) {
      if (required) fail(400, "invalid_body", std::string("'") + key + "' is required");
      return !required;
    }
    if (!body[key].is_string()) {
      fail(400, "invalid_body", std::string("'") + key + "' must be a string");
      return false;
    }
    *out = body[key].get<std::string>();
    return true;
  }
  std::optional<RunRow> find_run(const std::string& id) {
    std::string err;
    auto r = s_.store_->find_run(id, &err);
    if (!r) fail(404, "not_found", err);
    return r;
  }

  // --- routes ---
  // Refuses a call that would write while the disk is full (answered: 503 store_full).
  bool store_full() {
    if (!s_.store_->full()) return false;
    reply(s_.store_full_response());
    return true;
  }

  void healthz() {
    if (s_.shutting_down())
      return ok(503, {{"status", "shutting_down"}, {"runs_active", s_.sched_->active_runs()}});
    if (s_.store_->full())
      return ok(503, {{"status", "store_full"},
                      {"full_since", iso8601_ms(s_.store_->full_since())},
                      {"held_writes", s_.store_->held_writes()},
                      {"runs_active", s_.sched_->active_runs()}});
    size_t active = 0, invalid = 0;
    for (auto& [f, e] : s_.registry_->entries()) {
      active += e.active ? 1 : 0;
      invalid += (!e.active && !e.removed) ? 1 : 0;
    }
    ok(200, {{"status", "ok"},
             {"pipelines", active},
             {"pipelines_invalid", invalid},
             {"runs_active", s_.sched_->active_runs()},
             {"uptime_s", (wall_ms() - s_.started_at_) / 1000}});
  }

  void metrics() {
    Metrics::Gauges g;
    g.runs_in_flight = s_.sched_->active_runs();
    g.runs_by_status = s_.store_->count_runs_by_status();
    for (auto& [f, e] : s_.registry_->entries()) {
      g.pipelines_active += e.active ? 1 : 0;
      g.pipelines_invalid += (!e.active && !e.removed) ? 1 : 0;
    }
    g.http_connections = s_.http_ ? s_.http_->connections() : 0;
    if (s_.http_) {
      g.http_bad_requests = s_.http_->stats().bad_requests;
      g.http_timeouts = s_.http_->stats().timeouts;
      g.http_connections_accepted = s_.http_->stats().connections_accepted;
    }
    g.sse_clients = s_.sse_->clients();
    g.store_commits = s_.store_->commits();
    g.store_full_errors = s_.store_->full_errors();
    g.store_full = s_.store_->full();
    g.start_time_s = s_.started_at_ / 1000.0;
    reply(Response::text(200, s_.metrics_.render(g), "text/plain; version=0.0.4; charset=utf-8"));
  }

  json pipeline_json(const PipelineEntry& e) {
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
          for (auto& sc : s_.schedules())
            if (sc.pipeline == p.name && sc.key == t.spec && sc.next_fire > 0)
              x["next_fire"] = iso8601_ms(sc.next_fire);
        trig.push_back(x);
      }
      j["triggers"] = trig;
    }
    j["error"] = e.error.empty() ? json(nullptr)
                                 : json{{"message", e.error}, {"at", iso8601_ms(e.error_at)}};
    return j;
  }

  void list_pipelines() {
    json arr = json::array();
    for (auto& [f, e] : s_.registry_->entries()) arr.push_back(pipeline_json(e));
    ok(200, {{"pipelines", arr}, {"dir", s_.registry_->dir()}});
  }

  void get_pipeline(const std::string& name) {
    const PipelineEntry* e = s_.registry_->by_name(name);
    if (!e) return fail(404, "not_found", "no pipeline '" + name + "' in " + s_.registry_->dir());
    json j = pipeline_json(*e);
    json versions = json::array();
    for (auto& d : s_.store_->definitions(e->name))
      versions.push_back({{"version", d.version},
                          {"sha256", d.sha256},
                          {"loaded_at", iso8601_ms(d.loaded_at)},
                          {"path", d.path},
                          {"active", e->active && d.version == e->version}});
    j["versions"] = versions;
    json loads = json::array();
    for (auto& l : s_.store_->loads(e->active ? e->name : "", e->file, 20)) {
      json x{{"at", iso8601_ms(l.at)}, {"outcome", l.outcome}, {"file", l.path}};
      if (l.version) x["version"] = l.version;
      if (!l.error.empty()) x["error"] = l.error;
      loads.push_back(x);
    }
    j["loads"] = loads;
    if (e->active) j["graph"] = graph_json(e->active->root.get());
    ok(200, j);
  }

  void validate(const std::string& name) {
    const PipelineEntry* e = s_.registry_->by_name(name);
    std::string file = e ? e->file : s_.registry_->dir() + "/" + name + ".lua";
    std::string source = rq_.body;
    if (source.empty()) {
      if (!e) return fail(404, "not_found", "no pipeline '" + name + "'; send its source");
      FILE* f = fopen(file.c_str(), "rb");
      if (!f) return fail(404, "not_found", "cannot read " + file + ": " + strerror(errno));
      char buf[65536];
      size_t n;
      while ((n = fread(buf, 1, sizeof buf, f)) > 0) source.append(buf, n);
      fclose(f);
    }
    // Off the loop: a source that computes at its top level must not hold the server.
    Server* srv = &s_;
    auto ex = ex_;
    bool started = s_.registry_->check_async(
        file, std::move(source),
        [srv, ex](std::unique_ptr<Pipeline> p, std::vector<Diagnostic> diags) {
          Api::answer(*srv, ex, validate_answer(p.get(), diags));
        });
    if (!started) {
      Response r =
          error_response(503, "busy",
                         std::to_string(Registry::kMaxChecks) +
                             " validations are running already; try again in a few seconds");
      r.headers.emplace_back("Retry-After", "2");
      reply(std::move(r));
    }
  }

  static Response validate_answer(const Pipeline* p, const std::vector<Diagnostic>& diags) {
    if (!p) {
      json errs = json::array();
      for (auto& d : diags)
        errs.push_back({{"file", d.file}, {"line", d.line}, {"message", d.message}});
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

  void start_run(const std::string& name) {
    if (s_.shutting_down()) return fail(503, "shutting_down", "the server is shutting down");
    if (store_full()) return;
    Pipeline* p = s_.registry_->active(name);
    if (!p) {
      const PipelineEntry* e = s_.registry_->by_name(name);
      return fail(e ? 409 : 404, e ? "not_active" : "not_found",
                  e ? "pipeline '" + name + "' has no valid version: " + e->error
                    : "no pipeline '" + name + "' in " + s_.registry_->dir());
    }
    json body;
    if (!body_object(&body)) return;
    json input = body.contains("input") ? body["input"] : json::object();
    if (!input.is_object())
      return fail(400, "invalid_body",
                  std::string("'input' must be a JSON object, got ") + input.type_name());
    RunOptions ro;
    ro.source = "api";
    ro.input_json = dump_json(input);
    if (!string_field(body, "idempotency_key", &ro.idempotency_key, false)) return;
    if (const std::string* h = rq_.header("idempotency-key"))
      if (ro.idempotency_key.empty()) ro.idempotency_key = *h;
    if (!ro.idempotency_key.empty()) {
      if (auto prev = s_.store_->find_by_idempotency_key(p->name, ro.idempotency_key))
        return ok(200, {{"run_id", prev->id},
                        {"trace_id", prev->trace_id},
                        {"status", prev->status},
                        {"existing", true}});
    }
    if (const std::string* tp = rq_.header("traceparent"))
      ro.trace_id = trace_from_traceparent(*tp);
    s_.start_and_answer(p, ro, ex_, json::object());
  }

  bool run_filter(RunFilter* f, int max_limit, int def_limit) {
    f->status = rq_.param("status");
    static const std::vector<std::string> kStatuses = {"queued",    "running", "awaiting_approval",
                                                       "succeeded", "failed",  "cancelled"};
    if (!f->status.empty() &&
        std::find(kStatuses.begin(), kStatuses.end(), f->status) == kStatuses.end()) {
      fail(400, "bad_parameter",
           "status: '" + f->status +
               "' is not one of queued, running, awaiting_approval, succeeded, failed, "
               "cancelled");
      return false;
    }
    f->pipeline = rq_.param("pipeline");
    f->source = rq_.param("source");
    int64_t now = wall_ms();
    for (auto [key, out] : {std::pair{"since", &f->since_ms}, std::pair{"until", &f->until_ms}}) {
      bool found = false;
      std::string v = rq_.param(key, &found);
      if (!found) continue;
      std::string err;
      if (!parse_time_ms(v, now, out, &err)) {
        fail(400, "bad_parameter", std::string(key) + ": " + err);
        return false;
      }
    }
    bool has_limit = false;
    std::string lim = rq_.param("limit", &has_limit);
    f->limit = def_limit;
    if (has_limit) {
      char* end = nullptr;
      long v = strtol(lim.c_str(), &end, 10);
      if (lim.empty() || *end || v < 1 || v > max_limit) {
        fail(400, "bad_parameter",
             "limit: '" + lim + "' must be a number from 1 to " + std::to_string(max_limit));
        return false;
      }
      f->limit = static_cast<int>(v);
    }
    bool has_cursor = false;
    std::string cursor = rq_.param("cursor", &has_cursor);
    if (has_cursor && !decode_cursor(cursor, &f->before_created_at, &f->before_id)) {
      fail(400, "bad_cursor",
           "cursor: '" + cursor.substr(0, 80) +
               "' is not a cursor this server gave (use next_cursor as is)");
      return false;
    }
    return true;
  }

  void list_runs(bool csv) {
    RunFilter f;
    if (!run_filter(&f, csv ? 10000 : 1000, csv ? 10000 : 50)) return;
    int want = f.limit;
    f.limit = want + 1;  // one more tells whether there is a next page
    auto rows = s_.store_->list_runs(f);
    bool more = static_cast<int>(rows.size()) > want;
    if (more) rows.resize(static_cast<size_t>(want));
    std::string next = more ? encode_cursor(rows.back().created_at, rows.back().id) : "";
    if (csv) {
      std::string out =
          "id,pipeline,version,status,source,created_at,started_at,finished_at,duration_ms,"
          "attempts,trace_id,error_type,error_node,error_message\r\n";
      for (auto& r : rows) {
        std::string dur =
            r.finished_at && r.started_at ? std::to_string(r.finished_at - r.started_at) : "";
        for (const std::string& v :
             {r.id, r.pipeline, std::to_string(r.version), r.status.str(), r.source,
              iso8601_ms(r.created_at), r.started_at ? iso8601_ms(r.started_at) : "",
              r.finished_at ? iso8601_ms(r.finished_at) : "", dur, std::to_string(r.attempts),
              r.trace_id, r.error_type, r.error_node})
          out += csv_field(v) + ",";
        out += csv_field(r.error_message) + "\r\n";
      }
      Response resp = Response::text(200, std::move(out), "text/csv; charset=utf-8");
      resp.headers.emplace_back("Content-Disposition", "attachment; filename=\"runs.csv\"");
      if (more) {
        resp.headers.emplace_back("X-Truncated", "true");
        resp.headers.emplace_back("X-Next-Cursor", next);
      }
      return reply(std::move(resp));
    }
    json arr = json::array();
    for (auto& r : rows) arr.push_back(run_json(r));
    ok(200, {{"runs", arr}, {"next_cursor", more ? json(next) : json(nullptr)}});
  }

  void get_run(const std::string& id) {
    auto r = find_run(id);
    if (!r) return;
    json j = run_detail_json(*s_.store_, *r);
    j["active_here"] = s_.sched_->is_active(r->id);
    ok(200, j);
  }

  void cancel(const std::string& id) {
    if (store_full()) return;
    json body;
    if (!body_object(&body)) return;
    std::string reason = "cancelled through the API";
    if (!string_field(body, "reason", &reason, false)) return;
    auto r = find_run(id);
    if (!r) return;
    if (r->status == RunStatus::succeeded || r->status == RunStatus::failed ||
        r->status == RunStatus::cancelled)
      return fail(409, "conflict", "run " + r->id + " is already " + to_string(r->status));
    if (s_.sched_->is_active(r->id)) {
      s_.sched_->cancel_run(r->id, reason);
      s_.store_->commit();
    } else if (owner_alive(*r)) {
      if (!s_.store_->request_cancel(r->id, reason, wall_ms()))
        return fail(409, "conflict", "run " + r->id + " finished meanwhile");
      return ok(202,
                {{"run_id", r->id}, {"status", "cancel_requested"}, {"owner_pid", r->owner_pid}});
    } else {
      // Its owner is gone: take it, end the process groups it left, record the cancellation.
      if (!s_.store_->claim_run(r->id, r->owner_pid, getpid()))
        return fail(409, "conflict",
                    "run " + r->id + " was taken over by another process meanwhile");
      std::vector<std::string> ended;
      end_orphan_groups(*s_.store_, r->id, kOrphanGraceMs, &ended);
      if (!s_.store_->cancel_orphan_run(*r, reason, wall_ms()))
        return fail(500, "store", s_.store_->error());
      auto now = s_.store_->find_run(r->id, nullptr);
      return ok(200, {{"run_id", r->id},
                      {"status", now ? now->status : "cancelled"},
                      {"orphan_groups_ended", ended}});
    }
    auto now = s_.store_->find_run(r->id, nullptr);
    ok(200, {{"run_id", r->id}, {"status", now ? now->status : "cancelled"}});
  }

  void retry(const std::string& id) {
    if (s_.shutting_down()) return fail(503, "shutting_down", "the server is shutting down");
    if (store_full()) return;
    auto r = find_run(id);
    if (!r) return;
    if (r->status != RunStatus::failed && r->status != RunStatus::cancelled)
      return fail(409, "conflict",
                  "run " + r->id + " is " + to_string(r->status) +
                      "; only a failed or cancelled run can be retried");
    if (!r->parent_run.empty())
      return fail(409, "conflict",
                  "run " + r->id + " is a child run of " + r->parent_run + "; retry the parent");
    std::string err;
    Pipeline* p = s_.registry_->for_run(*r, &err);
    if (!p) return fail(409, "not_loadable", err);
    if (!s_.store_->begin_run_attempt(r->id, getpid(), wall_ms()))
      return fail(409, "conflict", "run " + r->id + " changed meanwhile; not retried");
    auto fresh = s_.store_->find_run(r->id, nullptr);
    if (!fresh || !s_.sched_->resume_run(p, *fresh, &err, true))
      return fail(500, "internal", err.empty() ? "run vanished" : err);
    std::string rid = r->id;
    int attempt = fresh->attempts;
    auto ex = ex_;
    Server* srv = &s_;
    s_.sched_->after_commit([srv, ex, rid, attempt] {
      Api::answer(*srv, ex,
                  Response::json(
                      202, dump_json(json{
                               {"run_id", rid}, {"status", "running"}, {"run_attempt", attempt}})));
    });
  }

  void decide(const std::string& id, const std::string& node) {
    if (store_full()) return;
    json body;
    if (!body_object(&body)) return;
    std::string decision, who, comment;
    if (!string_field(body, "decision", &decision, true)) return;
    if (!string_field(body, "approver", &who, true)) return;
    if (!string_field(body, "comment", &comment, false)) return;
    bool approve = decision == "approve" || decision == "approved";
    if (!approve && decision != "reject" && decision != "rejected")
      return fail(400, "invalid_body", "decision: '" + decision + "' must be approve or reject");
    if (who.empty()) return fail(400, "invalid_body", "'approver' must not be empty");
    if (node.empty()) return fail(404, "not_found", "no gate named in the path");
    auto r = find_run(id);
    if (!r) return;
    // Committed by decide_gate: the hub sends it after the next commit, with what follows.
    Decision d = decide_gate(*s_.store_, *r, node, approve, who, comment, wall_ms());
    if (d.ok) s_.sse_->on_event(d.event);
    if (!d.ok) {
      int st = d.code == "not_found"   ? 404
               : d.code == "forbidden" ? 403
               : d.code == "conflict"  ? 409
                                       : 500;
      return fail(st, d.code.c_str(), d.message);
    }
    // The run goes on: here if it is active here; else, if nobody runs it, it is resumed here.
    RunRow root = *r;
    while (!root.parent_run.empty()) {
      auto parent = s_.store_->find_run(root.parent_run, nullptr);
      if (!parent) break;
      root = *parent;
    }
    std::string continued = "no";
    if (s_.sched_->is_active(root.id) || s_.sched_->is_active(r->id)) {
      s_.sched_->poll_gates();
      continued = "here";
    } else if (root.status == RunStatus::awaiting_approval && !owner_alive(root) &&
               !s_.shutting_down()) {
      std::string err;
      Pipeline* p = s_.registry_->for_run(root, &err);
      if (p && s_.store_->claim_run(root.id, root.owner_pid, getpid()) &&
          s_.sched_->resume_run(p, root, &err))
        continued = "resumed";
    } else if (owner_alive(root)) {
      continued = "owner";  // its process polls the store for decisions
    }
    ok(200, {{"run_id", r->id},
             {"node", node},
             {"decision", approve ? "approved" : "rejected"},
             {"by", who},
             {"continued", continued}});
  }

  void events() {
    std::string run = rq_.param("run"), pipeline = rq_.param("pipeline");
    int64_t last = -1;  // no position: from now on (0: from the first event)
    std::string lei;
    if (const std::string* h = rq_.header("last-event-id")) lei = *h;
    bool found = false;
    std::string q = rq_.param("last_event_id", &found);
    if (found) lei = q;
    if (!lei.empty()) {
      char* end = nullptr;
      long long v = strtoll(lei.c_str(), &end, 10);
      if (*end || v < 0)
        return fail(400, "bad_parameter", "Last-Event-ID: '" + lei + "' is not an event id");
      last = v;
    }
    if (!run.empty()) {
      auto r = find_run(run);
      if (!r) return;
      run = r->id;
    }
    s_.metrics_.http_response(200);
    s_.sse_->subscribe(ex_, run, pipeline, last);
  }

  Server& s_;
  Ex ex_;
  const http::Request& rq_;
};

void Api::route(Server& s, std::shared_ptr<http::Exchange> ex) {
  ApiImpl(s, std::move(ex)).run();
}

void Api::answer(Server& s, const std::shared_ptr<http::Exchange>& ex, http::Response r) {
  s.metrics_.http_response(r.status);
  ex->respond(std::move(r));
}

}  // namespace orch
