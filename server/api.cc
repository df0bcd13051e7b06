#include "server/api.h"

#include <openssl/evp.h>

#include <algorithm>

#include "server/api_call.h"

namespace orch {
namespace {

// The API. A path matched with another method is answered 405 with Allow, once the caller
// passes the route's auth; a path of no route is 404.
constexpr Route kRoutes[] = {
    {"GET", "/healthz", RouteAuth::kNone, api_healthz},
    {"GET", "/metrics", RouteAuth::kRead, api_metrics},
    {"GET", "/api/doctor", RouteAuth::kRead, api_doctor},
    {"GET", "/api/pipelines", RouteAuth::kRead, api_list_pipelines},
    {"GET", "/api/pipelines/{name}", RouteAuth::kRead, api_get_pipeline},
    {"POST", "/api/pipelines/{name}/validate", RouteAuth::kWrite, api_validate_pipeline},
    {"POST", "/api/pipelines/{name}/runs", RouteAuth::kWrite, api_start_run},
    {"GET", "/api/runs", RouteAuth::kRead, api_list_runs},
    {"GET", "/api/runs.csv", RouteAuth::kRead, api_list_runs_csv},
    {"GET", "/api/runs/{id}", RouteAuth::kRead, api_get_run},
    {"POST", "/api/runs/{id}/cancel", RouteAuth::kWrite, api_cancel_run},
    {"POST", "/api/runs/{id}/retry", RouteAuth::kWrite, api_retry_run},
    {"POST", "/api/runs/{id}/approvals/{node...}", RouteAuth::kWrite, api_decide_gate},
    {"POST", "/api/runs/{id}/signals/{name}", RouteAuth::kWrite, api_deliver_signal},
    {"GET", "/api/events", RouteAuth::kRead, api_events},
};

// False (answered 401) when the caller may not call a route with this auth.
bool authorize(ApiCall& call, RouteAuth auth) {
  if (auth == RouteAuth::kNone || call.c.authorized(call.rq, auth == RouteAuth::kWrite))
    return true;
  http::Response r = http::error_response(
      401, "unauthorized",
      call.c.opts.token.empty()
          ? "this call changes state; it is only allowed from loopback without a token"
          : "missing or wrong bearer token (Authorization: Bearer ...)");
  r.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"orchrun\"");
  call.reply(std::move(r));
  return false;
}

}  // namespace

void ApiCall::fail(int status, const char* code, const std::string& msg) {
  reply(http::error_response(status, code, msg));
}

void ApiCall::ok(int status, const json& j) {
  reply(http::Response::json(status, dump_json(j)));
}

bool ApiCall::body_object(json* out) {
  if (rq.body.empty() || rq.body.find_first_not_of(" \t\r\n") == std::string::npos) {
    *out = json::object();
    return true;
  }
  std::string err;
  *out = parse_json(rq.body, &err, kMaxJsonDepth);  // deeper is a 400, before any copy
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

bool ApiCall::string_field(const json& body, const char* key, std::string* out, bool required) {
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

std::optional<RunRow> ApiCall::find_run(const std::string& id) {
  std::string err;
  auto r = c.store->find_run(id, &err);
  if (!r) fail(404, "not_found", err);
  return r;
}

bool ApiCall::store_full() {
  if (!c.store->full()) return false;
  reply(c.store_full_response());
  return true;
}

std::span<const Route> api_routes() {
  return kRoutes;
}

void route_api(ServerContext& c, const ExchangePtr& ex) {
  ApiCall call(c, ex);
  const http::Request& rq = call.rq;
  RouteMatch m = match_route(kRoutes, rq.method, rq.path);
  if (m.route) {
    if (!authorize(call, m.route->auth)) return;
    call.params = std::move(m.params);
    return m.route->handler(call);
  }
  if (m.path_routes.empty())
    return call.fail(404, "not_found", "no route " + rq.method + " " + rq.path);
  // The strictest auth of the path's routes comes first, as for a call with the right method.
  RouteAuth auth = RouteAuth::kNone;
  for (const Route* r : m.path_routes) auth = std::max(auth, r->auth);
  if (!authorize(call, auth)) return;
  std::string allow = allowed_methods(m.path_routes);
  http::Response r = http::error_response(
      405, "method_not_allowed", rq.method + " is not allowed on " + rq.path + "; use " + allow);
  r.headers.emplace_back("Allow", allow);
  call.reply(std::move(r));
}

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

}  // namespace orch
