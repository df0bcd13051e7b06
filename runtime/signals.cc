#include "runtime/signals.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

#include "runtime/loop.h"

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

void on_signal(int signo) {
  int n = g_count.fetch_add(1) + 1;
  g_signo.store(signo);
  if (n >= 2) {
    for (auto& g : g_groups) {
      pid_t p = g.load();
      if (p > 0) kill(-p, SIGKILL);
    }
    const char msg[] = "\norchrun: interrupted again; killed child processes, exiting now\n";
    ssize_t ignored = write(2, msg, sizeof msg - 1);
    (void)ignored;
    _exit(128 + signo);
  }
  if (uv_async_t* a = g_async.load()) uv_async_send(a);
}

}  // namespace

InterruptHandler::InterruptHandler(uv_loop_t* loop, std::function<void(int)> on_interrupt,
                                   bool stop_lua)
    : async_(new uv_async_t), cb_(std::move(on_interrupt)) {
  g_count = 0;
  g_stop_lua = stop_lua;
  g_signo = 0;
  uv_async_init(loop, async_, [](uv_async_t* a) {
    auto* self = static_cast<InterruptHandler*>(a->data);
    if (self && g_count.load() > 0) self->cb_(g_signo.load());
  });
  async_->data = this;
  uv_unref(reinterpret_cast<uv_handle_t*>(async_));
  g_async = async_;
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
  close_and_delete(async_);
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
