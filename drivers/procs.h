// Who is alive: the orchrun process that owns a run, and the process groups a run's o.exec
// calls started, told apart from whatever later got the same pid.
//
// A pid alone names a process only while it lives: after a crash the kernel hands the number
// to the next process that asks. So an identity is the pid's start time (clock ticks since
// boot, /proc/PID/stat field 22) and the boot it belongs to (/proc/sys/kernel/random/boot_id):
// "BOOT_ID:START". Two processes never share one. The store keeps the identity of each run's
// owner and of each process group it started; a run's owner is alive only while a process
// with that identity runs, and a recorded group is signalled only when its leader still has
// its identity, or when the leader is gone but the group still has members (Linux does not
// reuse a pid while a process group of that number exists).
#pragma once
#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace orch {

// This boot's id ("" where /proc does not tell).
const std::string& boot_id();
// "BOOT_ID:START" of a live process, "" when there is none (or only a zombie).
std::string process_identity(pid_t pid);
// The identity of this process (computed once).
const std::string& self_identity();

// Is `pid` a live orchrun process other than this one, so that its runs must not be taken
// over? With `identity` (what the store recorded for the owner): exactly that process. Without
// (rows written before identities were stored): a live process whose executable is orchrun.
bool owner_alive(int64_t pid, const std::string& identity);

// Members of process group `pgid` that are not zombies.
int live_group_members(pid_t pgid);

}  // namespace orch
