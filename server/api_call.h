// One call of the JSON API as its handler sees it: the request, its path parameters, the
// server's context, and the answers every handler gives (errors, JSON, a body read as an
// object). The handlers, one file per resource, are listed here; server/api.cc routes to them.
#pragma once
#include <optional>
#include <string>

#include "base/json_util.h"
#include "server/context.h"
#include "server/routes.h"

namespace orch {

class ApiCall {
 public:
  ApiCall(ServerContext& c, ExchangePtr ex) : c(c), ex(std::move(ex)), rq(this->ex->request()) {}

  ServerContext& c;
  ExchangePtr ex;
  const http::Request& rq;
  RouteParams params;

  void reply(http::Response r) { c.answer(ex, std::move(r)); }
  void fail(int status, const char* code, const std::string& msg);
  void ok(int status, const json& j);
  // The request body as a JSON object ({} when empty). False (answered) when it is not one.
  bool body_object(json* out);
  // body[key] as a string into *out (left alone when absent or null). False (answered) when
  // it is not a string, or absent while required.
  bool string_field(const json& body, const char* key, std::string* out, bool required);
  // The run, or nullopt (answered 404).
  std::optional<RunRow> find_run(const std::string& id);
  // Refuses a call that would write while the disk is full (answered: 503 store_full).
  bool store_full();
};

// api_meta.cc
void api_healthz(ApiCall& call);
void api_metrics(ApiCall& call);
void api_doctor(ApiCall& call);
// api_pipelines.cc
void api_list_pipelines(ApiCall& call);
void api_get_pipeline(ApiCall& call);
void api_validate_pipeline(ApiCall& call);
// api_runs.cc
void api_start_run(ApiCall& call);
void api_list_runs(ApiCall& call);
void api_list_runs_csv(ApiCall& call);
void api_get_run(ApiCall& call);
void api_cancel_run(ApiCall& call);
void api_retry_run(ApiCall& call);
// api_approvals.cc
void api_decide_gate(ApiCall& call);
void api_deliver_signal(ApiCall& call);
// api_events.cc
void api_events(ApiCall& call);

}  // namespace orch
