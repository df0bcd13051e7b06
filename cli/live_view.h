// What `orchrun FILE.lua` shows while a run goes on. On a terminal: a compact block of node
// lines redrawn in place with elapsed times. Otherwise (CI logs, pipes): one line per
// transition, which reads well in a log file.
#pragma once
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cli/format.h"
#include "drivers/timer.h"
#include "store/events.h"

namespace orch::cli {

class LiveView : public EventSink {
 public:
  LiveView(FILE* out, bool interactive, uv_loop_t* loop);
  ~LiveView() override;
  void on_event(const Event& e) override;
  // Final redraw of the block, leaving it on screen.
  void finish();

 private:
  struct NodeLine {
    std::string node, status;
    int attempt = 0;
    uint64_t started_ns = 0;
    int64_t duration_ms = -1;
    std::string note;
  };
  void redraw();
  void clear_block();
  NodeLine& line_for(const std::string& node);

  FILE* out_;
  bool tty_;
  Style st_;
  std::unique_ptr<Timer> ticker_;
  std::vector<NodeLine> lines_;
  std::map<std::string, size_t> index_;
  size_t drawn_ = 0;
  uint64_t run_started_ns_ = 0;
  std::string run_label_;
};

}  // namespace orch::cli
