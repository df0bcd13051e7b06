#include "drivers/procs.h"

#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <thread>

#include "base/ids.h"

namespace orch {
namespace {

// Field 3 (state) and the numeric fields after the command name of /proc/PID/stat; the name is
// in parentheses and may hold spaces and ')' itself, so parsing starts after the last ')'.
struct Stat {
  char state = 0;
  long long pgrp = 0;
  unsigned long long start = 0;
};

bool read_stat(pid_t pid, Stat* out, std::string* comm = nullptr) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  FILE* f = fopen(path, "re");
  if (!f) return false;
  char buf[1024];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  char* open = strchr(buf, '(');
  char* close = strrchr(buf, ')');
  if (!open || !close || close < open) return false;
  if (comm) comm->assign(open + 1, static_cast<size_t>(close - open - 1));
  // After ") ": state(3) ppid(4) pgrp(5) session(6) tty_nr(7) tpgid(8) flags(9) minflt(10)
  // cminflt(11) majflt(12) cmajflt(13) utime(14) stime(15) cutime(16) cstime(17) priority(18)
  // nice(19) num_threads(20) itrealvalue(21) starttime(22)
  const char* p = close + 2;
  out->state = *p;
  long long fields[20] = {};
  int got =
      sscanf(p + 1,
             " %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld "
             "%lld %lld %lld %llu",
             &fields[0], &fields[1], &fields[2], &fields[3], &fields[4], &fields[5], &fields[6],
             &fields[7], &fields[8], &fields[9], &fields[10], &fields[11], &fields[12], &fields[13],
             &fields[14], &fields[15], &fields[16], &fields[17], &out->start);
  if (got != 19) return false;
  out->pgrp = fields[1];
  return true;
}

int64_t now_ms() {
  return wall_ms();
}

}  // namespace

const std::string& boot_id() {
  static const std::string id = [] {
    std::ifstream in("/proc/sys/kernel/random/boot_id");
    std::string s;
    std::getline(in, s);
    return s;
  }();
  return id;
}

std::string process_identity(pid_t pid) {
  if (pid <= 0) return "";
  Stat st;
  if (!read_stat(pid, &st) || st.state == 'Z' || st.state == 'X') return "";
  return boot_id() + ":" + std::to_string(st.start);
}

const std::string& self_identity() {
  static const std::string id = process_identity(getpid());
  return id;
}

bool owner_alive(int64_t pid, const std::string& identity) {
  if (pid <= 0 || pid == getpid()) return false;
  if (!identity.empty()) return process_identity(static_cast<pid_t>(pid)) == identity;
  // Older rows: any live orchrun with that pid.
  if (kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) return false;
  char buf[4096];
  std::string link = "/proc/" + std::to_string(pid) + "/exe";
  ssize_t n = readlink(link.c_str(), buf, sizeof buf - 1);
  if (n <= 0) return errno == EACCES;  // a zombie has no exe: it is gone
  std::string exe(buf, static_cast<size_t>(n));
  std::string base = exe.substr(exe.rfind('/') + 1);
  return base.rfind("orchrun", 0) == 0;
}

int live_group_members(pid_t pgid) {
  if (pgid <= 0) return 0;
  DIR* d = opendir("/proc");
  if (!d) return kill(-pgid, 0) == 0 ? 1 : 0;
  int n = 0;
  while (dirent* de = readdir(d)) {
    char* end = nullptr;
    long pid = strtol(de->d_name, &end, 10);
    if (!end || *end != '\0' || pid <= 0) continue;
    Stat st;
    if (read_stat(static_cast<pid_t>(pid), &st) && st.pgrp == pgid && st.state != 'Z' &&
        st.state != 'X')
      n++;
  }
  closedir(d);
  return n;
}

}  // namespace orch
