// Run control shared by the CLI and the server: deciding an approval gate, delivering a signal.
#pragma once
#include <cstdint>
#include <string>

#include "drivers/procs.h"
#include "store/store.h"

namespace orch {

// Is the owner of `run` a live orchrun process other than this one (so that its runs must not
// be taken over)? Its pid with the identity the store recorded (drivers/procs.h).
inline bool owner_alive(const RunRow& run) {
  return owner_alive(run.owner_pid, run.owner_start);
}

struct Decision {
  bool ok = false;
  // When not ok: not_found (no such gate), conflict (already decided, or the run is over),
  // forbidden (not among the approvers); and why, in a sentence.
  std::string code, message;
  Event event;  // the approval.decided event written (id set), when ok
};

// Records `who`'s decision on the waiting gate `node` of `run` (with an approval.decided
// event) and commits. Nothing is written unless it is ok.
Decision decide_gate(Store& store, const RunRow& run, const std::string& node, bool approve,
                     const std::string& who, const std::string& comment, int64_t now);

// Delivers the signal `name` to `run`, which must be waiting for it (o.wait) in its current
// attempt: the wait's approvals row gets the payload (JSON text) and the sender, with a
// signal.received event, and commits. When not ok, code is not_found (no such signal waited
// for now, the run waits for others, or it is over: all "conflict" to a caller that asked for
// a run that exists) or store. Decision::event is the event written.
Decision deliver_signal(Store& store, const RunRow& run, const std::string& name,
                        const std::string& payload, const std::string& who, int64_t now);

}  // namespace orch
