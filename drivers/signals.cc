#include "drivers/signals.h"

#include <semaphore.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <thread>

#include "drivers/loop.h"

namespace orch {
namespace {

// Process-wide by nature: signal dispositions are.
std::atomic<int> g_count{0};
std::atomic<int> g_signo{0};
std::atomic<uv_async_t*> g_async{nullptr};
std::atomic<bool> g_stop_lua{true};
constexpr int kMaxGroups = 4096;
std::atomic<pid_t> g_groups[kMaxGroups];
struct sigaction g_old_int, g_old_term;
// Posted by the handler at the first signal (sem_post is async-signal-safe): wakes the
// watchdog.
sem_t g_signalled;
std::atomic<bool> g_watchdog{false};

void kill_groups() {
  for (auto& g : g_groups) {
    pid_t p = g.load();
    if (p > 0) kill(-p, SIGKILL);
  }
}

void on_signal(int signo) {
  int n = g_count.fetch_add(1) + 1;
  g_signo.store(signo);
  if (n == 1 && g_watchdog.load()) sem_post(&g_signalled);
  if (n >= 2) {
    kill_groups();
    const char msg[] = "\norchrun: interrupted again; killed child processes, exiting now\n";
    ssize_t ignored = write(2, msg, sizeof msg - 1);
    (void)ignored;
    _exit(128 + signo);
  }
  if (uv_async_t* a = g_async.load()) uv_async_send(a);
}

}  // namespace

// Waits for the first signal, then for the handler's end at most `ms`; past that, exits.
struct InterruptHandler::Watchdog {
  explicit Watchdog(int64_t ms) : ms_(ms) {
    sem_init(&g_signalled, 0, 0);
    sem_init(&done_, 0, 0);
    g_watchdog = true;
    thread_ = std::thread([this] { watch(); });
  }
  ~Watchdog() {
    finished_ = true;
    sem_post(&done_);
    sem_post(&g_signalled);  // in case no signal came
    thread_.join();
    g_watchdog = false;
    sem_destroy(&done_);
    sem_destroy(&g_signalled);
  }
  void watch() {
    while (sem_wait(&g_signalled) != 0 && errno == EINTR) {
    }
    if (finished_) return;
    timespec until{};
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ms_ / 1000;
    until.tv_nsec += (ms_ % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
      until.tv_sec++;
      until.tv_nsec -= 1000000000;
    }
    int rc;
    while ((rc = sem_timedwait(&done_, &until)) != 0 && errno == EINTR) {
    }
    if (rc == 0 || finished_) return;
    int signo = g_signo.load();
    kill_groups();
    fprintf(stderr,
            "\norchrun: still running %lld ms after %s (stuck in C code or in the shutdown); "
            "killed child processes, exiting now\n",
            static_cast<long long>(ms_), signo == SIGTERM ? "SIGTERM" : "SIGINT");
    _exit(128 + signo);
  }
  int64_t ms_;
  sem_t done_;
  std::atomic<bool> finished_{false};
  std::thread thread_;
};

InterruptHandler::InterruptHandler(uv_loop_t* loop, std::function<void(int)> on_interrupt,
                                   bool stop_lua, int64_t force_after_ms)
    : async_(make_uv_handle<uv_async_t>()), cb_(std::move(on_interrupt)) {
  if (force_after_ms > 0) watchdog_ = std::make_unique<Watchdog>(force_after_ms);
  g_count = 0;
  g_stop_lua = stop_lua;
  g_signo = 0;
  uv_async_init(loop, async_.get(), [](uv_async_t* a) {
    auto* self = static_cast<InterruptHandler*>(a->data);
    if (self && g_count.load() > 0) self->cb_(g_signo.load());
  });
  async_->data = this;
  uv_unref(reinterpret_cast<uv_handle_t*>(async_.get()));
  g_async = async_.get();
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, &g_old_int);
  sigaction(SIGTERM, &sa, &g_old_term);
}

InterruptHandler::~InterruptHandler() {
  sigaction(SIGINT, &g_old_int, nullptr);
  sigaction(SIGTERM, &g_old_term, nullptr);
  g_async = nullptr;
  async_.reset();
  watchdog_.reset();
}

int InterruptHandler::count() const {
  return g_count.load();
}
int InterruptHandler::signo() const {
  return g_signo.load();
}

bool interrupt_requested() {
  return g_count.load(std::memory_order_relaxed) > 0 && g_stop_lua.load(std::memory_order_relaxed);
}
const char* interrupt_name() {
  return g_signo.load() == SIGTERM ? "SIGTERM" : "SIGINT";
}

void register_child_group(pid_t pgid) {
  for (auto& g : g_groups) {
    pid_t expected = 0;
    if (g.compare_exchange_strong(expected, pgid)) return;
  }
}

void unregister_child_group(pid_t pgid) {
  for (auto& g : g_groups) {
    pid_t expected = pgid;
    if (g.compare_exchange_strong(expected, 0)) return;
  }
}

}  // namespace orch
