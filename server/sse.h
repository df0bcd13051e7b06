// GET /api/events: server-sent events of runs and nodes. Events reach clients once they are
// committed (the store's commit hook flushes them), each with its row id as the SSE id, so a
// client that reconnects with Last-Event-ID gets exactly what it missed, from the store.
#pragma once
#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <vector>

#include "drivers/http_server.h"
#include "drivers/timer.h"
#include "store/events.h"
#include "store/store.h"

namespace orch {

class SseHub : public EventSink {
 public:
  SseHub(uv_loop_t* loop, Store* store);
  ~SseHub() override;
  void on_event(const Event& e) override;
  // Sends what was buffered to the clients (called after each commit).
  void flush();
  // Starts a stream: the events after `last_id` from the store, then live ones. Empty `run`
  // or `pipeline`: no filter.
  void subscribe(std::shared_ptr<http::Exchange> ex, const std::string& run,
                 const std::string& pipeline, int64_t last_id);
  size_t clients() const;
  void close_all();
  // A client further behind than this is disconnected (it can reconnect with Last-Event-ID).
  size_t max_pending_bytes = 8 << 20;

 private:
  struct Client {
    std::shared_ptr<http::Exchange> ex;
    std::string run, pipeline;
    int64_t last_id = 0;
  };
  void heartbeat();
  Store* store_;
  std::vector<Event> pending_;
  std::list<Client> clients_;
  std::unique_ptr<Timer> heartbeat_;
};

// One event in SSE framing: "id: N\nevent: KIND\ndata: JSON\n\n".
std::string sse_frame(const Event& e);

}  // namespace orch
