#include "cli/live_view.h"

#include <uv.h>

#include "base/duration.h"
#include "base/ids.h"
#include "base/json_util.h"

namespace orch::cli {

LiveView::LiveView(FILE* out, bool interactive, uv_loop_t* loop)
    : out_(out), tty_(interactive), st_(style_for(out)) {
  if (tty_) {
    ticker_ = std::make_unique<Timer>(loop);
    ticker_->start(
        100, [this] { redraw(); }, 100);
    ticker_->unref();
  }
}

LiveView::~LiveView() = default;

LiveView::NodeLine& LiveView::line_for(const std::string& node) {
  auto it = index_.find(node);
  if (it != index_.end()) return lines_[it->second];
  index_[node] = lines_.size();
  NodeLine l;
  l.node = node;
  l.status = "pending";
  lines_.push_back(l);
  return lines_.back();
}

void LiveView::on_event(const Event& e) {
  std::string err;
  json d = parse_json(e.data.empty() ? "{}" : e.data, &err);
  if (d.is_discarded()) d = json::object();
  if (e.kind == "run.started" || e.kind == "run.resumed" || e.kind == "run.retried") {
    run_started_ns_ = uv_hrtime();
    run_label_ = (e.kind == "run.resumed"   ? "resuming "
                  : e.kind == "run.retried" ? "retrying "
                                            : "") +
                 e.pipeline + " v" + std::to_string(e.version) + "  run " + e.run_id;
    fprintf(out_, "%s %s\n", st_.bold("▶").c_str(), st_.bold(run_label_).c_str());
    fflush(out_);
    return;
  }
  if (e.kind.rfind("run.", 0) == 0) return;  // the summary is printed by the command

  if (e.kind == "log") {
    std::string level = d.value("level", "info");
    std::string msg = d.value("message", "");
    std::string lv = level == "error"  ? st_.red(level)
                     : level == "warn" ? st_.yellow(level)
                                       : st_.dim(level);
    std::string fields = d.contains("fields") ? " " + st_.dim(dump_json(d["fields"])) : "";
    if (tty_) clear_block();
    fprintf(out_, "  %s %s %s%s\n", lv.c_str(), st_.dim(e.node + ":").c_str(), msg.c_str(),
            fields.c_str());
    if (tty_) redraw();
    fflush(out_);
    return;
  }

  NodeLine& l = line_for(e.node);
  std::string plain;  // the line for non-interactive output
  if (e.kind == "node.started") {
    l.status = "running";
    l.attempt = e.attempt;
    l.started_ns = uv_hrtime();
    l.duration_ms = -1;
    l.note = d.value("kind", "") == "fallback" ? "fallback" : "";
    plain = "started" +
            std::string(e.attempt > 1 ? " (attempt " + std::to_string(e.attempt) + ")" : "") +
            (l.note.empty() ? "" : " [fallback]");
  } else if (e.kind == "node.succeeded") {
    l.status = "succeeded";
    l.duration_ms = d.value("duration_ms", int64_t{0});
    l.attempt = e.attempt;
    if (d.contains("branch")) l.note = "→ " + d["branch"].get<std::string>();
    if (d.contains("case")) l.note = "→ " + d["case"].get<std::string>();
    if (d.contains("count") && d["count"].is_number())
      l.note = "→ " + std::to_string(d["count"].get<int64_t>()) + " items";
    if (d.contains("done") && d["done"].is_boolean())
      l.note =
          d["done"].get<bool>() ? "→ done" : "→ again (" + d.value("verdict", "not done") + ")";
    if (d.contains("verdict") && !d.contains("done"))
      l.note = "verdict " + d.value("verdict", "") +
               (d.value("reason", "").empty() ? "" : " (" + d.value("reason", "") + ")");
    if (d.value("via", "") == "fallback") l.note = "via fallback";
    if (d.value("via", "") == "escalation") l.note = "accepted by " + d.value("by", "?");
    plain = "succeeded" + (l.duration_ms >= 0 ? " in " + format_duration_ms(l.duration_ms) : "") +
            (l.note.empty() ? "" : " " + l.note);
  } else if (e.kind == "node.failed") {
    bool retry = d.value("will_retry", false);
    l.status = retry ? "retrying" : "failed";
    l.attempt = e.attempt;
    std::string msg = first_line(d.value("message", ""), 100);
    l.note = retry ? "attempt " + std::to_string(e.attempt) + " failed, retry in " +
                         format_duration_ms(d.value("retry_in_ms", int64_t{0})) + ": " + msg
                   : msg;
    if (!retry && d.value("fallback", false)) {
      l.status = "retrying";
      l.note = "failed, running fallback: " + msg;
    }
    plain = (retry ? "attempt " + std::to_string(e.attempt) + " failed (retry in " +
                         format_duration_ms(d.value("retry_in_ms", int64_t{0})) + ")"
                   : std::string("failed")) +
            ": [" + d.value("error_type", "error") + "] " + msg;
  } else if (e.kind == "node.waiting") {
    l.status = "waiting";
    l.attempt = e.attempt;
    l.note = d.value("gate", "") == "signal"
                 ? "waiting for the signal " + d.value("signal", "")
                 : "waiting for approval" + (d.value("message", "").empty()
                                                 ? std::string()
                                                 : ": " + d.value("message", ""));
    plain = l.note;
  } else if (e.kind == "node.reused") {
    l.status = "succeeded";
    l.attempt = e.attempt;
    l.note = "reused (stored before the resume)";
    plain = "reused: its success was stored before the resume";
  } else if (e.kind == "node.skipped") {
    l.status = "skipped";
    l.note = d.value("reason", "");
    plain = "skipped (" + l.note + ")";
  } else if (e.kind == "node.cancelled") {
    l.status = "cancelled";
    l.note = d.value("reason", "");
    plain = "cancelled (" + l.note + ")";
  } else {
    return;
  }
  if (tty_) {
    redraw();
  } else {
    std::string ts = iso8601_ms(e.ts).substr(11, 12);
    fprintf(out_, "%s %s %s %s\n", st_.dim(ts).c_str(), status_symbol(l.status),
            pad(e.node, 24).c_str(), plain.c_str());
    fflush(out_);
  }
}

void LiveView::clear_block() {
  if (drawn_ > 0) fprintf(out_, "\x1b[%zuA\x1b[J", drawn_);
  drawn_ = 0;
}

void LiveView::redraw() {
  if (!tty_) return;
  clear_block();
  uint64_t now = uv_hrtime();
  size_t width = 12;
  for (auto& l : lines_) width = std::max(width, display_width(l.node) + 2);
  for (auto& l : lines_) {
    std::string sym = status_symbol(l.status);
    if (l.status == "succeeded")
      sym = st_.green(sym);
    else if (l.status == "failed")
      sym = st_.red(sym);
    else if (l.status == "running" || l.status == "retrying")
      sym = st_.cyan(sym);
    else
      sym = st_.yellow(sym);
    std::string time;
    if (l.status == "running" && l.started_ns)
      time = format_duration_ms(static_cast<int64_t>((now - l.started_ns) / 1000000));
    else if (l.duration_ms >= 0)
      time = format_duration_ms(l.duration_ms);
    std::string att = l.attempt > 1 ? st_.dim(" #" + std::to_string(l.attempt)) : "";
    std::string note =
        l.note.empty() ? "" : "  " + (l.status == "failed" ? st_.red(l.note) : st_.dim(l.note));
    fprintf(out_, "  %s %s%s%s\n", sym.c_str(), pad(l.node, width).c_str(), pad(time, 8).c_str(),
            (att + note).c_str());
    drawn_++;
  }
  fflush(out_);
}

void LiveView::finish() {
  if (tty_) {
    ticker_.reset();
    redraw();
    drawn_ = 0;  // leave the block on screen
  }
}

}  // namespace orch::cli
