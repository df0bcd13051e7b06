// The JSON API of orchrun serve (see README "HTTP API"): pipelines, runs, run control,
// approvals, the event stream, /metrics and /healthz.
#pragma once
#include <memory>

#include "drivers/http_server.h"

namespace orch {

class Server;

class Api {
 public:
  // Answers a request that is not a webhook delivery.
  static void route(Server& s, std::shared_ptr<http::Exchange> ex);
  // Sends `r` (and counts it in the metrics).
  static void answer(Server& s, const std::shared_ptr<http::Exchange>& ex, http::Response r);
};

// Opaque cursors of GET /api/runs: the (created_at, id) of the last run of a page.
std::string encode_cursor(int64_t created_at, const std::string& id);
bool decode_cursor(const std::string& cursor, int64_t* created_at, std::string* id);

}  // namespace orch
