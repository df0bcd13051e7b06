// What happens in a run, as one record shape: stored in the events table, shown by the live
// view, streamed to API clients (GET /api/events, server/sse.*) and counted by the metrics.
// Every event carries the trace and run it belongs to.
#pragma once
#include <cstdint>
#include <string>

namespace orch {

struct Event {
  int64_t id = 0;    // the events row id once stored (0: not stored, e.g. a reused success)
  int64_t ts = 0;    // unix ms
  std::string kind;  // run.started, node.started, node.succeeded, node.failed, ...
  std::string run_id;
  std::string trace_id;
  std::string pipeline;
  int version = 0;
  std::string node;  // node path ("gather/metrics"); empty for run events
  int attempt = 0;   // 0 for run events
  std::string data;  // a JSON object
  // The incident the run is about (o.ingest), on every event after the first ingest; 0/"".
  int64_t incident_id = 0;
  std::string fingerprint;
  std::string stage;  // the run's stage when it happened; "" for none
};

class EventSink {
 public:
  virtual ~EventSink() = default;
  virtual void on_event(const Event& e) = 0;
};

}  // namespace orch
