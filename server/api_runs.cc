// The API of runs: start, list (JSON pages, CSV), one run, cancel, retry.
#include <unistd.h>

#include <algorithm>

#include "base/duration.h"
#include "engine/control.h"
#include "engine/orphans.h"
#include "engine/run_json.h"
#include "server/api.h"
#include "server/api_call.h"

namespace orch {

using http::error_response;
using http::Response;

namespace {

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

bool run_filter(ApiCall& call, RunFilter* f, int max_limit, int def_limit) {
  f->status = call.rq.param("status");
  if (!f->status.empty() && !parse_run_status(f->status)) {
    std::string names;
    for (const char* n : status_names(RunStatus{})) names += (names.empty() ? "" : ", ") + std::string(n);
    call.fail(400, "bad_parameter", "status: '" + f->status + "' is not one of " + names);
    return false;
  }
  f->pipeline = call.rq.param("pipeline");
  f->source = call.rq.param("source");
  f->stage = call.rq.param("stage");
  int64_t now = wall_ms();
  for (auto [key, out] : {std::pair{"since", &f->since_ms}, std::pair{"until", &f->until_ms}}) {
    bool found = false;
    std::string v = call.rq.param(key, &found);
    if (!found) continue;
    std::string err;
    if (!parse_time_ms(v, now, out, &err)) {
      call.fail(400, "bad_parameter", std::string(key) + ": " + err);
      return false;
    }
  }
  bool has_limit = false;
  std::string lim = call.rq.param("limit", &has_limit);
  f->limit = def_limit;
  if (has_limit) {
    char* end = nullptr;
    long v = strtol(lim.c_str(), &end, 10);
    if (lim.empty() || *end || v < 1 || v > max_limit) {
      call.fail(400, "bad_parameter",
                "limit: '" + lim + "' must be a number from 1 to " + std::to_string(max_limit));
      return false;
    }
    f->limit = static_cast<int>(v);
  }
  bool has_cursor = false;
  std::string cursor = call.rq.param("cursor", &has_cursor);
  if (has_cursor && !decode_cursor(cursor, &f->before_created_at, &f->before_id)) {
    call.fail(400, "bad_cursor",
              "cursor: '" + cursor.substr(0, 80) +
                  "' is not a cursor this server gave (use next_cursor as is)");
    return false;
  }
  return true;
}

void list_runs(ApiCall& call, bool csv) {
  ServerContext& c = call.c;
  RunFilter f;
  if (!run_filter(call, &f, csv ? 10000 : 1000, csv ? 10000 : 50)) return;
  int want = f.limit;
  f.limit = want + 1;  // one more tells whether there is a next page
  auto rows = c.store->list_runs(f);
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
    return call.reply(std::move(resp));
  }
  json arr = json::array();
  for (auto& r : rows) arr.push_back(run_json(r));
  call.ok(200, {{"runs", arr}, {"next_cursor", more ? json(next) : json(nullptr)}});
}

}  // namespace

void api_start_run(ApiCall& call) {
  ServerContext& c = call.c;
  const std::string& name = call.params.get("name");
  if (c.shutting_down) return call.fail(503, "shutting_down", "the server is shutting down");
  if (call.store_full()) return;
  Pipeline* p = c.registry->active(name);
  if (!p) {
    const PipelineEntry* e = c.registry->by_name(name);
    return call.fail(e ? 409 : 404, e ? "not_active" : "not_found",
                     e ? "pipeline '" + name + "' has no valid version: " + e->error
                       : "no pipeline '" + name + "' in " + c.registry->dir());
  }
  json body;
  if (!call.body_object(&body)) return;
  json input = body.contains("input") ? body["input"] : json::object();
  if (!input.is_object())
    return call.fail(400, "invalid_body",
                     std::string("'input' must be a JSON object, got ") + input.type_name());
  RunOptions ro;
  ro.source = "api";
  ro.input_json = dump_json(input);
  if (!call.string_field(body, "idempotency_key", &ro.idempotency_key, false)) return;
  if (const std::string* h = call.rq.header("idempotency-key"))
    if (ro.idempotency_key.empty()) ro.idempotency_key = *h;
  if (!ro.idempotency_key.empty()) {
    if (auto prev = c.store->find_by_idempotency_key(p->name, ro.idempotency_key))
      return call.ok(200, {{"run_id", prev->id},
                           {"trace_id", prev->trace_id},
                           {"status", prev->status},
                           {"existing", true}});
  }
  if (const std::string* tp = call.rq.header("traceparent"))
    ro.trace_id = trace_from_traceparent(*tp);
  c.start_and_answer(p, ro, call.ex, json::object());
}

void api_list_runs(ApiCall& call) {
  list_runs(call, false);
}

void api_list_runs_csv(ApiCall& call) {
  list_runs(call, true);
}

void api_get_run(ApiCall& call) {
  ServerContext& c = call.c;
  const std::string& id = call.params.get("id");
  auto r = call.find_run(id);
  if (!r) return;
  json j = run_detail_json(*c.store, *r);
  j["active_here"] = c.sched->is_active(r->id);
  call.ok(200, j);
}

void api_cancel_run(ApiCall& call) {
  ServerContext& c = call.c;
  const std::string& id = call.params.get("id");
  if (call.store_full()) return;
  json body;
  if (!call.body_object(&body)) return;
  std::string reason = "cancelled through the API";
  if (!call.string_field(body, "reason", &reason, false)) return;
  auto r = call.find_run(id);
  if (!r) return;
  if (r->status == RunStatus::succeeded || r->status == RunStatus::failed ||
      r->status == RunStatus::cancelled)
    return call.fail(409, "conflict", "run " + r->id + " is already " + to_string(r->status));
  if (c.sched->is_active(r->id)) {
    c.sched->cancel_run(r->id, reason);
    c.store->commit();
    // Its hooks (on.cancelled, finally) run first; the run is cancelled once they have.
    if (c.sched->is_active(r->id))
      return call.ok(202, {{"run_id", r->id}, {"status", "cancelling"}});
  } else if (owner_alive(*r)) {
    if (!c.store->request_cancel(r->id, reason, wall_ms()))
      return call.fail(409, "conflict", "run " + r->id + " finished meanwhile");
    return call.ok(
        202, {{"run_id", r->id}, {"status", "cancel_requested"}, {"owner_pid", r->owner_pid}});
  } else {
    // Its owner is gone: take it, end the process groups it left, record the cancellation.
    if (!c.store->claim_run(r->id, r->owner_pid, getpid()))
      return call.fail(409, "conflict",
                       "run " + r->id + " was taken over by another process meanwhile");
    std::vector<std::string> ended;
    end_orphan_groups(*c.store, r->id, kOrphanGraceMs, &ended);
    if (!c.store->cancel_orphan_run(*r, reason, wall_ms()))
      return call.fail(500, "store", c.store->error());
    auto now = c.store->find_run(r->id, nullptr);
    return call.ok(200, {{"run_id", r->id},
                         {"status", now ? now->status : "cancelled"},
                         {"orphan_groups_ended", ended}});
  }
  auto now = c.store->find_run(r->id, nullptr);
  call.ok(200, {{"run_id", r->id}, {"status", now ? now->status : "cancelled"}});
}

void api_retry_run(ApiCall& call) {
  ServerContext& c = call.c;
  const std::string& id = call.params.get("id");
  if (c.shutting_down) return call.fail(503, "shutting_down", "the server is shutting down");
  if (call.store_full()) return;
  auto r = call.find_run(id);
  if (!r) return;
  if (r->status != RunStatus::failed && r->status != RunStatus::cancelled)
    return call.fail(409, "conflict",
                     "run " + r->id + " is " + to_string(r->status) +
                         "; only a failed or cancelled run can be retried");
  if (!r->parent_run.empty())
    return call.fail(409, "conflict",
                     "run " + r->id + " is a child run of " + r->parent_run + "; retry the parent");
  std::string err;
  Pipeline* p = c.registry->for_run(*r, &err);
  if (!p) return call.fail(409, "not_loadable", err);
  if (!c.store->begin_run_attempt(r->id, getpid(), wall_ms()))
    return call.fail(409, "conflict", "run " + r->id + " changed meanwhile; not retried");
  auto fresh = c.store->find_run(r->id, nullptr);
  if (!fresh || !c.sched->resume_run(p, *fresh, &err, true))
    return call.fail(500, "internal", err.empty() ? "run vanished" : err);
  std::string rid = r->id;
  int attempt = fresh->attempts;
  auto ex = call.ex;
  ServerContext* cp = &c;
  c.sched->after_commit([cp, ex, rid, attempt] {
    cp->answer(
        ex, Response::json(
                202,
                dump_json(json{{"run_id", rid}, {"status", "running"}, {"run_attempt", attempt}})));
  });
}

}  // namespace orch
