// core.system (o.context.system): facts about this machine from /proc and statvfs, collected
// without blocking the loop. Every read runs on libuv's thread pool; the CPU percentage is the
// difference between two /proc/stat samples taken `interval` apart, the wait being a libuv
// timer (other nodes run meanwhile). A cancelled task stops the timer or, for a read already
// in the pool, stops listening for it.
#include <dirent.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "base/duration.h"
#include "base/ids.h"
#include "bindings/async_op.h"
#include "bindings/convert.h"
#include "bindings/lua_state.h"
#include "drivers/timer.h"

namespace orch {
namespace {

const char* const kFacets[] = {"cpu", "memory", "disk", "load", "processes"};
const char kKnownFacets[] = "cpu, memory, disk, load, processes";
const char kKnownOptions[] = "interval, paths";

struct Request {
  std::map<std::string, bool> facets;
  uint64_t interval_ms = 200;
  std::vector<std::string> paths{"/"};
  bool wants(const char* f) const { return facets.count(f) > 0; }
};

struct CpuSample {
  uint64_t busy = 0, total = 0;
  int cores = 0;
  int64_t running = -1, blocked = -1;
};

struct Disk {
  std::string path, error;
  double total = 0, free = 0, avail = 0;
};

struct SystemJob {
  uv_work_t req{};
  AsyncOp op;  // emptied when the task is cancelled during a pool job
  Request rq;
  bool second_sample = false;  // the work item being run reads /proc/stat again
  std::unique_ptr<Timer> timer;
  // Filled by the workers.
  std::string error;
  CpuSample cpu0, cpu1;
  std::map<std::string, double> meminfo_kb;
  double load[3] = {0, 0, 0};
  int64_t processes = 0;
  std::vector<Disk> disks;
  std::string hostname;
  double uptime_s = 0;
};

bool slurp(const char* path, std::string* out, std::string* err) {
  FILE* f = fopen(path, "re");
  if (!f) {
    *err = std::string("cannot read ") + path + ": " + strerror(errno);
    return false;
  }
  char buf[8192];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) out->append(buf, n);
  fclose(f);
  return true;
}

bool read_cpu(CpuSample* s, std::string* err) {
  std::string text;
  if (!slurp("/proc/stat", &text, err)) return false;
  std::istringstream in(text);
  std::string line;
  bool have_total = false;
  while (std::getline(in, line)) {
    if (line.rfind("cpu ", 0) == 0) {
      // user nice system idle iowait irq softirq steal (guest time is inside user already)
      std::istringstream f(line.substr(4));
      uint64_t v[8] = {0};
      for (auto& x : v) f >> x;
      uint64_t idle = v[3] + v[4];
      s->total = 0;
      for (auto x : v) s->total += x;
      s->busy = s->total - idle;
      have_total = true;
    } else if (line.rfind("cpu", 0) == 0) {
      s->cores++;
    } else if (line.rfind("procs_running ", 0) == 0) {
      s->running = std::strtoll(line.c_str() + 14, nullptr, 10);
    } else if (line.rfind("procs_blocked ", 0) == 0) {
      s->blocked = std::strtoll(line.c_str() + 14, nullptr, 10);
    }
  }
  if (!have_total) *err = "cannot parse /proc/stat: no 'cpu' line";
  return have_total;
}

void collect(SystemJob* j) {
  std::string& err = j->error;
  const Request& rq = j->rq;
  if (rq.wants("cpu") || rq.wants("processes"))
    if (!read_cpu(&j->cpu0, &err)) return;
  if (rq.wants("memory")) {
    std::string text;
    if (!slurp("/proc/meminfo", &text, &err)) return;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
      auto colon = line.find(':');
      if (colon == std::string::npos) continue;
      j->meminfo_kb[line.substr(0, colon)] = std::strtod(line.c_str() + colon + 1, nullptr);
    }
    if (!j->meminfo_kb.count("MemTotal")) {
      err = "cannot parse /proc/meminfo: no MemTotal";
      return;
    }
  }
  if (rq.wants("load")) {
    std::string text;
    if (!slurp("/proc/loadavg", &text, &err)) return;
    if (sscanf(text.c_str(), "%lf %lf %lf", &j->load[0], &j->load[1], &j->load[2]) != 3) {
      err = "cannot parse /proc/loadavg: " + text;
      return;
    }
  }
  if (rq.wants("processes")) {
    DIR* d = opendir("/proc");
    if (!d) {
      err = std::string("cannot list /proc: ") + strerror(errno);
      return;
    }
    while (dirent* e = readdir(d)) {
      const char* p = e->d_name;
      bool digits = *p != '\0';
      for (; *p; p++) digits = digits && *p >= '0' && *p <= '9';
      if (digits) j->processes++;
    }
    closedir(d);
  }
  if (rq.wants("disk")) {
    for (const auto& path : rq.paths) {
      Disk dk;
      dk.path = path;
      struct statvfs st {};
      if (statvfs(path.c_str(), &st) != 0) {
        dk.error = "statvfs " + path + ": " + strerror(errno);
      } else {
        double unit = static_cast<double>(st.f_frsize ? st.f_frsize : st.f_bsize);
        dk.total = static_cast<double>(st.f_blocks) * unit;
        dk.free = static_cast<double>(st.f_bfree) * unit;
        dk.avail = static_cast<double>(st.f_bavail) * unit;
      }
      j->disks.push_back(std::move(dk));
    }
  }
  char host[256] = {0};
  if (gethostname(host, sizeof host - 1) == 0) j->hostname = host;
  std::string up;
  std::string ignored;
  if (slurp("/proc/uptime", &up, &ignored)) j->uptime_s = std::strtod(up.c_str(), nullptr);
}

double round1(double v) {
  return std::round(v * 10) / 10;
}

void set_num(lua_State* L, const char* k, double v) {
  lua_pushnumber(L, v);
  lua_setfield(L, -2, k);
}

void push_result(lua_State* L, const SystemJob* j) {
  const Request& rq = j->rq;
  lua_createtable(L, 0, 8);
  if (rq.wants("cpu")) {
    lua_createtable(L, 0, 4);
    uint64_t dt = j->cpu1.total - j->cpu0.total;
    uint64_t db = j->cpu1.busy - j->cpu0.busy;
    double pct = dt > 0 && j->cpu1.total >= j->cpu0.total ? 100.0 * db / dt : 0.0;
    set_num(L, "percent", round1(std::min(100.0, std::max(0.0, pct))));
    set_num(L, "cores", j->cpu1.cores > 0 ? j->cpu1.cores : 1);
    set_num(L, "interval_ms", static_cast<double>(rq.interval_ms));
    lua_setfield(L, -2, "cpu");
  }
  if (rq.wants("memory")) {
    auto kb = [j](const char* k) {
      auto it = j->meminfo_kb.find(k);
      return it == j->meminfo_kb.end() ? -1.0 : it->second;
    };
    double total = kb("MemTotal");
    double avail = kb("MemAvailable");
    if (avail < 0)
      avail =
          std::max(0.0, kb("MemFree")) + std::max(0.0, kb("Buffers")) + std::max(0.0, kb("Cached"));
    lua_createtable(L, 0, 6);
    set_num(L, "total_bytes", total * 1024);
    set_num(L, "available_bytes", avail * 1024);
    set_num(L, "used_bytes", (total - avail) * 1024);
    set_num(L, "used_percent", total > 0 ? round1(100.0 * (total - avail) / total) : 0);
    set_num(L, "swap_total_bytes", std::max(0.0, kb("SwapTotal")) * 1024);
    set_num(L, "swap_free_bytes", std::max(0.0, kb("SwapFree")) * 1024);
    lua_setfield(L, -2, "memory");
  }
  if (rq.wants("disk")) {
    lua_createtable(L, static_cast<int>(j->disks.size()), 0);
    int i = 1;
    for (const auto& d : j->disks) {
      lua_createtable(L, 0, 6);
      lua_pushlstring(L, d.path.data(), d.path.size());
      lua_setfield(L, -2, "path");
      if (!d.error.empty()) {
        lua_pushlstring(L, d.error.data(), d.error.size());
        lua_setfield(L, -2, "error");
      } else {
        // As df computes it: used against what non-root users can use.
        double used = d.total - d.free;
        set_num(L, "total_bytes", d.total);
        set_num(L, "free_bytes", d.free);
        set_num(L, "available_bytes", d.avail);
        set_num(L, "used_bytes", used);
        set_num(L, "used_percent",
                used + d.avail > 0 ? round1(100.0 * used / (used + d.avail)) : 0);
      }
      lua_rawseti(L, -2, i++);
    }
    push_array_mt(L);
    lua_setmetatable(L, -2);
    lua_setfield(L, -2, "disk");
  }
  if (rq.wants("load")) {
    lua_createtable(L, 0, 3);
    set_num(L, "one", j->load[0]);
    set_num(L, "five", j->load[1]);
    set_num(L, "fifteen", j->load[2]);
    lua_setfield(L, -2, "load");
  }
  if (rq.wants("processes")) {
    lua_createtable(L, 0, 3);
    set_num(L, "total", static_cast<double>(j->processes));
    set_num(L, "running", static_cast<double>(std::max<int64_t>(0, j->cpu0.running)));
    set_num(L, "blocked", static_cast<double>(std::max<int64_t>(0, j->cpu0.blocked)));
    lua_setfield(L, -2, "processes");
  }
  lua_pushlstring(L, j->hostname.data(), j->hostname.size());
  lua_setfield(L, -2, "hostname");
  set_num(L, "uptime_s", std::floor(j->uptime_s));
  set_num(L, "collected_at", static_cast<double>(wall_ms()));
}

void queue(SystemJob* j);

// Called on the loop when a pool job is done: either the end, or time for the CPU interval.
void after_work(uv_work_t* r, int) {
  auto* j = static_cast<SystemJob*>(r->data);
  if (!j->op.task()) {
    delete j;
    return;
  }
  if (j->error.empty() && j->rq.wants("cpu") && !j->second_sample) {
    j->second_sample = true;
    j->timer = std::make_unique<Timer>(j->op.host()->loop());
    j->op.on_cancel([j] { delete j; });  // the Timer goes with it
    j->timer->start(j->rq.interval_ms, [j] {
      j->timer.reset();
      queue(j);
    });
    return;
  }
  j->op.complete([j](lua_State* co) {
    if (!j->error.empty()) return push_failure(co, "o.context.system: " + j->error, "EIO");
    push_result(co, j);
    return 1;
  });
  delete j;
}

void queue(SystemJob* j) {
  j->req.data = j;
  // A pool job cannot be stopped midway: a cancelled task just stops listening for it.
  j->op.on_cancel([j] { j->op = AsyncOp(); });
  uv_queue_work(
      j->op.host()->loop(), &j->req,
      [](uv_work_t* r) {
        auto* job = static_cast<SystemJob*>(r->data);
        if (job->second_sample)
          read_cpu(&job->cpu1, &job->error);
        else
          collect(job);
      },
      after_work);
}

// Reads the arguments into *rq. Returns "" or what is wrong.
std::string parse_request(lua_State* L, Request* rq) {
  auto add = [rq](const std::string& f) -> std::string {
    for (const char* k : kFacets)
      if (f == k) {
        rq->facets[f] = true;
        return "";
      }
    return "unknown facet '" + f + "' (known: " + kKnownFacets + ")";
  };
  if (lua_isnoneornil(L, 1)) {
    for (const char* k : kFacets) rq->facets[k] = true;
    return "";
  }
  if (lua_type(L, 1) == LUA_TSTRING) return add(lua_tostring(L, 1));
  if (!lua_istable(L, 1))
    return std::string("expected a list of facets (") + kKnownFacets + ") or nothing, got " +
           luaL_typename(L, 1);
  std::string err;
  lua_pushnil(L);
  while (err.empty() && lua_next(L, 1)) {
    if (lua_type(L, -2) == LUA_TNUMBER) {
      if (lua_type(L, -1) != LUA_TSTRING)
        err = std::string("facet names must be strings, got ") + luaL_typename(L, -1);
      else
        err = add(lua_tostring(L, -1));
    } else {
      std::string key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
      if (key == "interval") {
        std::string derr;
        std::optional<int64_t> ms;
        if (lua_type(L, -1) == LUA_TNUMBER)
          ms = seconds_to_ms(lua_tonumber(L, -1), &derr);
        else if (lua_type(L, -1) == LUA_TSTRING)
          ms = parse_duration_ms(lua_tostring(L, -1), &derr);
        else
          derr = "expected a duration";
        if (!ms || *ms < 10 || *ms > 60000)
          err = "option 'interval' must be a duration from 10ms to 60s" +
                (derr.empty() ? "" : " (" + derr + ")");
        else
          rq->interval_ms = static_cast<uint64_t>(*ms);
      } else if (key == "paths") {
        rq->paths.clear();
        if (lua_type(L, -1) == LUA_TSTRING) {
          rq->paths.push_back(lua_tostring(L, -1));
        } else if (lua_istable(L, -1)) {
          for (int i = 1;; i++) {
            lua_rawgeti(L, -1, i);
            if (lua_isnil(L, -1)) {
              lua_pop(L, 1);
              break;
            }
            if (lua_type(L, -1) == LUA_TSTRING)
              rq->paths.push_back(lua_tostring(L, -1));
            else
              err = "option 'paths' must be a list of mount points (strings)";
            lua_pop(L, 1);
          }
        } else {
          err = "option 'paths' must be a list of mount points (strings)";
        }
      } else {
        err = "unknown option '" + key + "' (known: " + kKnownOptions + ")";
      }
    }
    lua_pop(L, 1);
  }
  if (!err.empty()) {
    lua_pop(L, 1);  // the key lua_next left
    return err;
  }
  if (rq->facets.empty())
    for (const char* k : kFacets) rq->facets[k] = true;
  return "";
}

// o.context.system([{facets..., interval = "200ms", paths = {"/"}}])
int l_system(lua_State* L) {
  char msg[512] = {0};
  {
    Request rq;
    std::string err = parse_request(L, &rq);
    if (!err.empty()) snprintf(msg, sizeof msg, "o.context.system: %s", err.c_str());
  }
  if (msg[0]) return luaL_error(L, "%s", msg);
  AsyncOp op = AsyncOp::begin(L, "o.context.system");
  // Read again, into the job, now that nothing raises any more: a job made before begin()
  // would leak when it raises.
  auto* j = new SystemJob();
  parse_request(L, &j->rq);
  j->op = op;
  queue(j);
  return op.yield_detached(L, &j->op);
}

}  // namespace

void register_context(lua_State* L) {
  lua_pushcfunction(L, l_system);
  lua_setfield(L, -2, "system");
}

}  // namespace orch
