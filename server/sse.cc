#include "server/sse.h"

#include <algorithm>

#include "engine/run_json.h"

namespace orch {

std::string sse_frame(const Event& e) {
  // dump_json escapes newlines, so the data is one line.
  return "id: " + std::to_string(e.id) + "\nevent: " + e.kind +
         "\ndata: " + dump_json(event_json(e)) + "\n\n";
}

SseHub::SseHub(uv_loop_t* loop, Store* store)
    : store_(store), heartbeat_(std::make_unique<Timer>(loop)) {
  // A comment line now and then keeps proxies from closing an idle stream and shows us
  // clients that went away.
  heartbeat_->start(
      15000, [this] { heartbeat(); }, 15000);
  heartbeat_->unref();
}

SseHub::~SseHub() {
  close_all();
}

void SseHub::on_event(const Event& e) {
  if (e.id == 0 || clients_.empty()) return;
  pending_.push_back(e);
}

void SseHub::flush() {
  if (pending_.empty()) return;
  std::vector<Event> evs;
  evs.swap(pending_);
  for (auto& e : evs) {
    std::string frame;
    for (auto it = clients_.begin(); it != clients_.end();) {
      Client& c = *it;
      if (c.ex->closed()) {
        it = clients_.erase(it);
        continue;
      }
      bool match = e.id > c.last_id && (c.run.empty() || c.run == e.run_id) &&
                   (c.pipeline.empty() || c.pipeline == e.pipeline);
      if (match) {
        if (frame.empty()) frame = sse_frame(e);
        c.last_id = e.id;
        if (!c.ex->write(frame) || c.ex->pending_bytes() > max_pending_bytes) {
          c.ex->end_stream();
          it = clients_.erase(it);
          continue;
        }
      }
      ++it;
    }
  }
}

void SseHub::subscribe(std::shared_ptr<http::Exchange> ex, const std::string& run,
                       const std::string& pipeline, int64_t last_id) {
  // What the store has is committed: send it first, then the live events (flush() skips what
  // a client already got, by id).
  store_->commit();
  ex->begin_stream(200, {{"Content-Type", "text/event-stream"},
                         {"Cache-Control", "no-cache"},
                         {"X-Accel-Buffering", "no"}});
  ex->write("retry: 1000\n\n");
  Client c{ex, run, pipeline, std::max<int64_t>(last_id, 0)};
  if (last_id >= 0 || !run.empty()) {
    // Resuming (or following one run from its start): replay from the store in pages.
    for (;;) {
      auto evs = store_->events_after(c.last_id, run, pipeline, 1000);
      for (auto& e : evs) {
        ex->write(sse_frame(e));
        c.last_id = e.id;
      }
      if (evs.size() < 1000) break;
    }
  } else {
    // A new client without a position starts from now.
    c.last_id = store_->last_event_id();
  }
  if (ex->closed()) return;
  clients_.push_back(std::move(c));
  // Removal happens in flush()/heartbeat() (closed() is checked there): a close callback may
  // run while those walk the list.
}

void SseHub::heartbeat() {
  for (auto it = clients_.begin(); it != clients_.end();) {
    if (it->ex->closed() || !it->ex->write(": ping\n\n")) {
      it = clients_.erase(it);
      continue;
    }
    ++it;
  }
}

size_t SseHub::clients() const {
  size_t n = 0;
  for (auto& c : clients_) n += c.ex->closed() ? 0 : 1;
  return n;
}

void SseHub::close_all() {
  auto cs = std::move(clients_);
  clients_.clear();
  for (auto& c : cs) c.ex->end_stream();
}

}  // namespace orch
