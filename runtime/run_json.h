// Runs, events and node attempts as JSON: what `orchrun inspect --json`, `orchrun runs --json`
// and the server's API answer with.
#pragma once
#include <vector>

#include "runtime/events.h"
#include "runtime/json_util.h"
#include "runtime/store/store.h"

namespace orch {

// A run's row: id, trace, pipeline, version, status, source, times, input, output, error.
json run_json(const RunRow& r);
// An event (id, ts, kind, run, trace, pipeline, node, attempt, incident, data).
json event_json(const Event& e);
// Everything about a run: its row, node attempts, critical path, artifacts, child runs,
// events and approvals.
json run_detail_json(Store& store, const RunRow& run);
// The critical path, read from the timings (see run_json.cc).
std::vector<const NodeRunRow*> critical_path(const std::vector<NodeRunRow>& nodes);

}  // namespace orch
