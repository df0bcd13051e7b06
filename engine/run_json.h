// Runs, events and node attempts as JSON: what `orchrun inspect --json`, `orchrun runs --json`
// and the server's API answer with.
#pragma once
#include <vector>

#include "base/json_util.h"
#include "store/events.h"
#include "store/store.h"

namespace orch {

// A run's row: id, trace, pipeline, version, status, source, times, input, output, error;
// "orphaned": true when its owner is gone (see run_orphaned).
json run_json(const RunRow& r);
// A run the store says is queued or running whose owner process is gone (crash, kill -9, a
// server that died): nothing runs it until orchrun resume or a server takes it over.
bool run_orphaned(const RunRow& r);
// An event (id, ts, kind, run, trace, pipeline, node, attempt, incident, data).
json event_json(const Event& e);
// Everything about a run: its row, node attempts, critical path, artifacts, child runs,
// events and approvals.
json run_detail_json(Store& store, const RunRow& run);
// A gate as it stands at `now`: one still `waiting` past its timeout was decided by that
// timeout (status timed_out, by "timeout", at timeout_at) even if no process has acted on it
// yet: a one-shot parks its run at the gate and exits, and the decision is applied when the
// run is resumed (orchrun resume, or a server that takes the run over). *pending (if given)
// says the run has not applied it yet.
ApprovalRow gate_as_of(ApprovalRow a, int64_t now, bool* pending = nullptr);
// The critical path, read from the timings (see run_json.cc).
std::vector<const NodeRunRow*> critical_path(const std::vector<NodeRunRow>& nodes);

}  // namespace orch
