// What the store's interface defines itself, whatever the backend.
#include "store/store.h"

namespace orch {

Event run_event(const RunRow& run, const char* kind, int64_t ts, std::string data) {
  Event e;
  e.ts = ts;
  e.kind = kind;
  e.run_id = run.id;
  e.trace_id = run.trace_id;
  e.pipeline = run.pipeline;
  e.version = run.version;
  e.incident_id = run.incident_id;  // later events of a run carry its incident, like the rest
  e.fingerprint = run.fingerprint;
  e.data = std::move(data);
  return e;
}

}  // namespace orch
