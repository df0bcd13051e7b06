// Prometheus metrics of orchrun serve (text exposition format 0.0.4), counted from the events
// the scheduler emits and from what the server sees (webhook deliveries, reloads).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "store/events.h"

namespace orch {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)) {}
  void observe(const std::string& label, double v);
  // name_bucket{label_name="...",le="..."} ..., name_sum, name_count
  void render(std::string* out, const std::string& name, const std::string& label_name) const;

 private:
  struct Series {
    std::vector<uint64_t> counts;  // per bound, not cumulative
    uint64_t count = 0;
    double sum = 0;
  };
  std::vector<double> bounds_;
  std::map<std::string, Series> series_;
};

class Metrics : public EventSink {
 public:
  Metrics();
  void on_event(const Event& e) override;
  void webhook(const std::string& pipeline, const std::string& outcome) {
    webhooks_[{pipeline, outcome}]++;
  }
  void reload(const std::string& outcome) { reloads_[outcome]++; }
  void http_response(int status) { http_[status]++; }

  // What only the server knows at scrape time.
  struct Gauges {
    size_t runs_in_flight = 0;
    std::vector<std::pair<std::string, int64_t>> runs_by_status;  // from the store
    size_t pipelines_active = 0, pipelines_invalid = 0;
    size_t http_connections = 0, sse_clients = 0;
    // Refused by the HTTP layer before any route (malformed 400, 413, 431, 505; slow 408).
    uint64_t http_bad_requests = 0, http_timeouts = 0, http_connections_accepted = 0;
    uint64_t store_commits = 0;      // transactions committed by this process
    uint64_t store_full_errors = 0;  // commits that failed on a full disk
    bool store_full = false;         // the disk is full now
    double uptime_s = 0, start_time_s = 0;
  };
  std::string render(const Gauges& g) const;

 private:
  using Pair = std::pair<std::string, std::string>;
  std::map<Pair, uint64_t> runs_started_;   // pipeline, source
  std::map<Pair, uint64_t> runs_finished_;  // pipeline, status
  std::map<Pair, uint64_t> node_attempts_;  // pipeline, status
  std::map<Pair, uint64_t> webhooks_;       // pipeline, outcome
  std::map<std::string, uint64_t> reloads_;
  std::map<int, uint64_t> http_;
  Histogram run_seconds_, node_seconds_;
};

// Escapes a label value: backslash, double quote and newline.
std::string prom_escape(const std::string& v);

}  // namespace orch
