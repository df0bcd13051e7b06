// Webhooks: POST <path> starts a run of the pipeline whose o.webhook trigger has that path,
// with HMAC signatures, deduplicated deliveries and W3C trace context.
#pragma once
#include <map>
#include <memory>
#include <string>

#include "drivers/http_server.h"
#include "engine/pipeline_loader.h"

namespace orch {

struct ServerContext;
class Registry;

// A webhook route: POST <path> starts a run of the pipeline.
struct WebhookRoute {
  std::string pipeline, path;
  std::string secret_name;       // a secret's name; empty: unsigned
  std::string signature_header;  // lower-case
  std::string signature_name;    // as the pipeline wrote it (for messages)
  std::string dedup_header;      // lower-case; empty: no deduplication
  bool envelope = false;         // input = {body, headers, query, delivery_id}
  // auth = { bearer = NAME } | { basic = NAME }: the Authorization header must carry the
  // secret's value (a token; user:password for basic).
  std::string auth_kind;         // "" | "bearer" | "basic"
  std::string auth_secret;
};

// The webhook routes of the registry's active pipelines, by path.
std::map<std::string, WebhookRoute> build_webhooks(const Registry& registry);
// The registry's extra check of a pipeline that loaded: "" or why its webhook path is refused
// (reserved for the server, or another pipeline's).
std::string check_webhook_paths(ServerContext& c, const Pipeline& p, const std::string& file);
// Answers `ex` when its path is a webhook's (a delivery, or 405 for another method). False
// when it is not: the request is for the API.
bool dispatch_webhook(ServerContext& c, const std::shared_ptr<http::Exchange>& ex);

}  // namespace orch
