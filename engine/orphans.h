// Ending the process groups a dead owner left: what the store recorded of a run's o.exec
// calls (store/store.h) checked against what runs now (drivers/procs.h).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace orch {

class Store;

// Ends the process groups the store records as started by `run_id`'s attempts and not seen
// to end (their owner died): SIGTERM to each group still alive, SIGKILL to what is left after
// `grace_ms`, then marks them ended. Never signals a pid that now belongs to another process.
// Blocks until the groups are gone (at most grace_ms + 1 s). Returns how many groups were
// signalled; `notes` gets one line per group ("pid 123 (sh): SIGTERM, gone after 20 ms").
// Call it only for a run no live process owns (after a claim, or for a dead owner's run).
int end_orphan_groups(Store& store, const std::string& run_id, int64_t grace_ms,
                      std::vector<std::string>* notes = nullptr);

}  // namespace orch
