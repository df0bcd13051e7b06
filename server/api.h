// The JSON API of orchrun serve (see README "HTTP API"): pipelines, runs, run control,
// approvals, the event stream, /metrics and /healthz, as one route table (server/api.cc).
#pragma once
#include <cstdint>
#include <span>
#include <string>

#include "server/context.h"
#include "server/routes.h"

namespace orch {

// Every route of the API.
std::span<const Route> api_routes();
// Answers a request that is not a webhook delivery: the route of its path and method, or 404
// (no such path) or 405 with Allow (not that method); 401 first when the route's auth fails.
void route_api(ServerContext& c, const ExchangePtr& ex);

// Opaque cursors of GET /api/runs: the (created_at, id) of the last run of a page.
std::string encode_cursor(int64_t created_at, const std::string& id);
bool decode_cursor(const std::string& cursor, int64_t* created_at, std::string* id);

}  // namespace orch
