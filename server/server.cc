#include "server/server.h"

#include "server/context.h"
#include "server/lifecycle.h"

namespace orch {

std::string trace_from_traceparent(const std::string& v) {
  if (v.size() < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-') return "";
  std::string version = v.substr(0, 2), trace = v.substr(3, 32);
  if (version == "ff") return "";
  bool zero = true;
  for (char c : version + trace) {
    if (!isxdigit(static_cast<unsigned char>(c)) || isupper(static_cast<unsigned char>(c)))
      return "";
  }
  for (char c : trace) zero = zero && c == '0';
  return zero ? "" : trace;
}

Server::Server(Loop* loop, Store* store, ServeOptions opts)
    : ctx_(std::make_unique<ServerContext>(loop, store, std::move(opts))) {}

Server::~Server() = default;

bool Server::start(std::string* err) {
  return start_server(*ctx_, err);
}

int Server::port() const {
  return ctx_->http ? ctx_->http->port() : 0;
}

void Server::shutdown(std::function<void()> done) {
  shutdown_server(*ctx_, std::move(done));
}

bool Server::shutting_down() const {
  return ctx_->shutting_down;
}

void Server::check_schedules() {
  orch::check_schedules(*ctx_);
}

const std::vector<Schedule>& Server::schedules() const {
  return ctx_->schedules;
}

Registry& Server::registry() {
  return *ctx_->registry;
}

Scheduler& Server::scheduler() {
  return *ctx_->sched;
}

Metrics& Server::metrics() {
  return ctx_->metrics;
}

int64_t Server::now() const {
  return ctx_->now();
}

}  // namespace orch
