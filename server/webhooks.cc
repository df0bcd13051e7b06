#include "server/webhooks.h"

#include "base/digest.h"
#include "base/ids.h"
#include "base/json_util.h"
#include "server/context.h"

namespace orch {
namespace {

void handle_webhook(ServerContext& c, const WebhookRoute& route, const ExchangePtr& ex) {
  const http::Request& rq = ex->request();
  auto reject = [&](int status, const char* code, const std::string& msg) {
    c.metrics.webhook(route.pipeline, code);
    c.answer(ex, http::error_response(status, code, msg));
  };
  if (c.shutting_down) return reject(503, "shutting_down", "the server is shutting down");
  if (c.store->full()) {
    c.metrics.webhook(route.pipeline, "store_full");
    return c.answer(ex, c.store_full_response());
  }
  Pipeline* p = c.registry->active(route.pipeline);
  if (!p) return reject(404, "not_found", "pipeline " + route.pipeline + " is not active");
  if (!route.secret_name.empty()) {
    std::string serr;
    auto secret = c.secrets.get(route.secret_name, &serr);
    if (!secret) {
      c.log("webhook %s: secret %s is not set (%s); refusing deliveries", route.path.c_str(),
            route.secret_name.c_str(), serr.c_str());
      return reject(500, "secret_missing",
                    "the webhook's secret " + route.secret_name + " is not configured");
    }
    const std::string* sig = rq.header(route.signature_header);
    if (!sig) return reject(401, "signature_missing", "missing header " + route.signature_name);
    std::string given = lower_ascii(*sig);
    if (given.rfind("sha256=", 0) == 0) given = given.substr(7);
    if (!equal_const_time(given, hmac_sha256_hex(*secret, rq.body)))
      return reject(401, "bad_signature",
                    route.signature_name +
                        " does not match the body (HMAC-SHA256 with the "
                        "webhook's secret)");
  }
  if (!route.auth_kind.empty()) {
    std::string serr;
    auto secret = c.secrets.get(route.auth_secret, &serr);
    if (!secret) {
      c.log("webhook %s: secret %s is not set (%s); refusing deliveries", route.path.c_str(),
            route.auth_secret.c_str(), serr.c_str());
      return reject(500, "secret_missing",
                    "the webhook's secret " + route.auth_secret + " is not configured");
    }
    const bool bearer = route.auth_kind == "bearer";
    auto refuse = [&](const std::string& msg) {
      c.metrics.webhook(route.pipeline, "unauthorized");
      http::Response r = http::error_response(401, "unauthorized", msg);
      r.headers.emplace_back("WWW-Authenticate",
                             bearer ? "Bearer realm=\"orchrun\"" : "Basic realm=\"orchrun\"");
      c.answer(ex, std::move(r));
    };
    const std::string* h = rq.header("authorization");
    const std::string scheme = bearer ? "bearer " : "basic ";
    if (!h || lower_ascii(h->substr(0, scheme.size())) != scheme)
      return refuse(std::string("this webhook needs Authorization: ") +
                    (bearer ? "Bearer <token>" : "Basic <base64 of user:password>"));
    std::string given = h->substr(scheme.size());
    while (!given.empty() && given.front() == ' ') given.erase(0, 1);
    const std::string expected = bearer ? *secret : base64_encode(*secret);
    if (!equal_const_time(given, expected))
      return refuse(bearer ? "wrong bearer token for this webhook"
                           : "wrong user or password for this webhook");
  } else if (route.secret_name.empty() && !c.loopback && !c.authorized(rq, true)) {
    return reject(401, "unauthorized",
                  "this webhook has no secret; beyond loopback it needs the bearer token (or "
                  "give it auth = { bearer = ... })");
  }
  std::string delivery;
  // A delivery seen before: 200 with the run the first one started, answered once the count
  // is committed, like an accepted delivery.
  auto duplicate = [&](const std::string& run_id) {
    c.metrics.webhook(route.pipeline, "duplicate");
    auto r = c.store->find_run(run_id, nullptr);
    json j{{"run_id", run_id}, {"duplicate", true}, {"delivery_id", delivery}};
    if (r) {
      j["trace_id"] = r->trace_id;
      j["status"] = r->status;
    }
    ServerContext* cp = &c;
    c.sched->after_commit(
        [cp, ex, body = dump_json(j)] { cp->answer(ex, http::Response::json(200, body)); });
  };
  if (!route.dedup_header.empty()) {
    if (const std::string* d = rq.header(route.dedup_header)) delivery = *d;
    if (!delivery.empty()) {
      if (auto prev = c.store->find_delivery(p->name, delivery)) {
        c.store->count_duplicate_delivery(p->name, delivery, c.now());
        return duplicate(*prev);
      }
    }
  }
  json body = json::object();
  if (!rq.body.empty()) {
    std::string perr;
    // Bounded depth: deeper bodies are refused here, before anything copies or converts them.
    body = parse_json(rq.body, &perr, kMaxJsonDepth);
    if (body.is_discarded())
      return reject(400, "invalid_json", "the body is not valid JSON: " + perr);
  }
  json input;
  if (route.envelope) {
    json headers = json::object();
    for (auto& [k, v] : rq.headers)
      if (k != "authorization" && k != route.signature_header) headers[k] = v;
    input = {{"body", body}, {"headers", headers}, {"path", rq.path}, {"query", rq.query}};
    if (!delivery.empty()) input["delivery_id"] = delivery;
  } else {
    input = body.is_object() ? body : json{{"payload", body}};
  }
  RunOptions ro;
  ro.source = "webhook";
  ro.input_json = dump_json(input);
  if (const std::string* tp = rq.header("traceparent")) ro.trace_id = trace_from_traceparent(*tp);
  json extra = json::object();
  if (!delivery.empty()) {
    // The look-up above is a read: another server on the same store may record this delivery
    // meanwhile. The claim is the statement that decides, for a run id made here; when the
    // other server has it, this is a duplicate.
    extra["delivery_id"] = delivery;
    ro.run_id = new_ulid(wall_ms());
    std::string err;
    auto recorded = c.store->claim_delivery(p->name, delivery, ro.run_id, c.now(), &err);
    if (!recorded) return reject(500, "store", err);
    if (*recorded != ro.run_id) return duplicate(*recorded);
  }
  c.metrics.webhook(route.pipeline, "accepted");
  c.start_and_answer(p, ro, ex, extra);
}

}  // namespace

std::map<std::string, WebhookRoute> build_webhooks(const Registry& registry) {
  std::map<std::string, WebhookRoute> hooks;
  registry.for_each_trigger("webhook", [&](const Pipeline& p, const Trigger&, const json& spec) {
    WebhookRoute r;
    r.pipeline = p.name;
    r.path = spec.value("path", "");
    r.secret_name = spec.value("secret", "");
    r.signature_name = spec.value("signature_header", "X-Hub-Signature-256");
    r.signature_header = lower_ascii(r.signature_name);
    r.dedup_header = lower_ascii(spec.value("dedup_header", ""));
    r.envelope = spec.value("input", "body") == "envelope";
    if (spec.contains("auth") && spec["auth"].is_object() && spec["auth"].size() == 1) {
      r.auth_kind = spec["auth"].begin().key();
      r.auth_secret = spec["auth"].begin().value().get<std::string>();
    }
    hooks[r.path] = r;
  });
  return hooks;
}

std::string check_webhook_paths(ServerContext& c, const Pipeline& p, const std::string& file) {
  for (auto& t : p.triggers) {
    if (t.type != "webhook") continue;
    std::string path = parse_json(t.spec, nullptr).value("path", "");
    if (path == "/healthz" || path == "/metrics" || path.rfind("/api/", 0) == 0 || path == "/api")
      return "o.webhook: path " + path + " is reserved for the server";
    auto it = c.webhooks.find(path);
    if (it == c.webhooks.end() || it->second.pipeline == p.name) continue;
    // The path's owner may be this very file under its previous name (a rename).
    const PipelineEntry* owner = c.registry->by_name(it->second.pipeline);
    if (!owner || owner->file != file)
      return "o.webhook: path " + path + " is already used by pipeline " + it->second.pipeline;
  }
  return "";
}

bool dispatch_webhook(ServerContext& c, const ExchangePtr& ex) {
  const http::Request& rq = ex->request();
  auto it = c.webhooks.find(rq.path);
  if (it == c.webhooks.end()) return false;
  if (rq.method == "POST") {
    handle_webhook(c, it->second, ex);
    return true;
  }
  http::Response r = http::error_response(
      405, "method_not_allowed",
      rq.path + " is a webhook of pipeline " + it->second.pipeline + ": deliveries are POSTed");
  r.headers.emplace_back("Allow", "POST");
  c.answer(ex, std::move(r));
  return true;
}

}  // namespace orch
