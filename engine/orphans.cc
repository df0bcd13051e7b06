#include "engine/orphans.h"

#include <signal.h>

#include <chrono>
#include <thread>

#include "base/ids.h"
#include "drivers/procs.h"
#include "store/store.h"

namespace orch {

int end_orphan_groups(Store& store, const std::string& run_id, int64_t grace_ms,
                      std::vector<std::string>* notes) {
  auto rows = store.open_processes(run_id);
  if (rows.empty()) return 0;
  struct Target {
    ProcessRow row;
    int64_t signalled_at = 0;
    bool killed = false;
  };
  std::vector<Target> targets;
  const std::string boot = boot_id();
  for (auto& r : rows) {
    auto pgid = static_cast<pid_t>(r.pgid);
    std::string now_id = process_identity(pgid);
    std::string why;
    bool ours;
    if (r.identity.rfind(boot + ":", 0) != 0) {
      ours = false;  // started before the last boot: nothing of it runs
      why = "gone (the machine restarted since)";
    } else if (!now_id.empty()) {
      ours = now_id == r.identity;
      if (!ours) why = "gone (pid " + std::to_string(pgid) + " now belongs to another process)";
    } else {
      // The leader is gone; members left in its group are its own (the pid of a process group
      // is not handed out again while the group has members).
      ours = live_group_members(pgid) > 0;
      if (!ours) why = "gone";
    }
    if (!ours) {
      store.end_process(r.run_id, r.pgid, r.identity, "gone", wall_ms());
      if (notes)
        notes->push_back("process group " + std::to_string(pgid) + " (" + r.command + ", node " +
                         r.node_id + "): " + why);
      continue;
    }
    kill(-pgid, SIGTERM);
    targets.push_back({r, wall_ms(), false});
  }
  // Wait for them to go; SIGKILL what is left after the grace.
  auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                 t0)
        .count();
  };
  bool sent_kill = false;
  for (;;) {
    bool any = false;
    for (auto& t : targets)
      if (live_group_members(static_cast<pid_t>(t.row.pgid)) > 0) any = true;
    if (!any) break;
    if (!sent_kill && elapsed() >= grace_ms) {
      for (auto& t : targets)
        if (live_group_members(static_cast<pid_t>(t.row.pgid)) > 0) {
          kill(-static_cast<pid_t>(t.row.pgid), SIGKILL);
          t.killed = true;
        }
      sent_kill = true;
    }
    if (elapsed() >= grace_ms + 1000) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  for (auto& t : targets) {
    bool left = live_group_members(static_cast<pid_t>(t.row.pgid)) > 0;
    store.end_process(t.row.run_id, t.row.pgid, t.row.identity, t.killed ? "killed" : "terminated",
                      wall_ms());
    if (notes)
      notes->push_back("process group " + std::to_string(t.row.pgid) + " (" + t.row.command +
                       ", node " + t.row.node_id + ", left by pid " +
                       std::to_string(t.row.owner_pid) + "): " +
                       (t.killed ? "SIGTERM, then SIGKILL after " + std::to_string(grace_ms) + " ms"
                                 : "ended by SIGTERM") +
                       (left ? "; some members are still there (not killable)" : ""));
  }
  store.commit();
  return static_cast<int>(targets.size());
}

}  // namespace orch
