#include "server/metrics.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

namespace orch {
namespace {

// A number or string field of an event's data, without parsing the whole JSON (events are
// counted on the hot path; their data is small and written by us).
bool int_field(const std::string& data, const char* key, int64_t* out) {
  std::string k = std::string("\"") + key + "\":";
  size_t i = data.find(k);
  if (i == std::string::npos) return false;
  const char* p = data.c_str() + i + k.size();
  char* end = nullptr;
  long long v = strtoll(p, &end, 10);
  if (end == p) return false;
  *out = v;
  return true;
}

std::string str_field(const std::string& data, const char* key) {
  std::string k = std::string("\"") + key + "\":\"";
  size_t i = data.find(k);
  if (i == std::string::npos) return "";
  size_t j = data.find('"', i + k.size());
  return j == std::string::npos ? "" : data.substr(i + k.size(), j - i - k.size());
}

std::string fmt_double(double v) {
  char buf[64];
  snprintf(buf, sizeof buf, "%.10g", v);
  return buf;
}

void header(std::string* out, const char* name, const char* type, const char* help) {
  *out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

void pairs(std::string* out, const char* name, const char* l1, const char* l2,
           const std::map<std::pair<std::string, std::string>, uint64_t>& m) {
  for (auto& [k, v] : m)
    *out += std::string(name) + "{" + l1 + "=\"" + prom_escape(k.first) + "\"," + l2 + "=\"" +
            prom_escape(k.second) + "\"} " + std::to_string(v) + "\n";
}

}  // namespace

std::string prom_escape(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

void Histogram::observe(const std::string& label, double v) {
  Series& s = series_[label];
  if (s.counts.empty()) s.counts.assign(bounds_.size(), 0);
  for (size_t i = 0; i < bounds_.size(); i++)
    if (v <= bounds_[i]) {
      s.counts[i]++;
      break;
    }
  s.count++;
  s.sum += v;
}

void Histogram::render(std::string* out, const std::string& name,
                       const std::string& label_name) const {
  for (auto& [label, s] : series_) {
    std::string l = label_name + "=\"" + prom_escape(label) + "\"";
    uint64_t cum = 0;
    for (size_t i = 0; i < bounds_.size(); i++) {
      cum += s.counts[i];
      *out += name + "_bucket{" + l + ",le=\"" + fmt_double(bounds_[i]) + "\"} " +
              std::to_string(cum) + "\n";
    }
    *out += name + "_bucket{" + l + ",le=\"+Inf\"} " + std::to_string(s.count) + "\n";
    *out += name + "_sum{" + l + "} " + fmt_double(s.sum) + "\n";
    *out += name + "_count{" + l + "} " + std::to_string(s.count) + "\n";
  }
}

Metrics::Metrics()
    : run_seconds_(
          {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600}),
      node_seconds_({0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300}) {
}

void Metrics::on_event(const Event& e) {
  if (e.id == 0) return;  // not stored (a success reused on resume): nothing happened
  std::string_view k = e.kind;
  if (k.substr(0, 4) == "run.") {
    std::string_view what = k.substr(4);
    if (what == "started") {
      std::string src = str_field(e.data, "source");
      runs_started_[{e.pipeline, src.empty() ? "unknown" : src}]++;
    } else if (what == "succeeded" || what == "failed" || what == "cancelled") {
      runs_finished_[{e.pipeline, std::string(what)}]++;
      int64_t ms = 0;
      if (int_field(e.data, "duration_ms", &ms)) run_seconds_.observe(e.pipeline, ms / 1000.0);
    }
    return;
  }
  if (k.substr(0, 5) == "node.") {
    std::string_view what = k.substr(5);
    if (what == "succeeded" || what == "failed" || what == "cancelled") {
      node_attempts_[{e.pipeline, std::string(what)}]++;
      int64_t ms = 0;
      if (int_field(e.data, "duration_ms", &ms)) node_seconds_.observe(e.pipeline, ms / 1000.0);
    }
  }
}

std::string Metrics::render(const Gauges& g) const {
  std::string out;
  out.reserve(4096);
  header(&out, "orchrun_runs_started_total", "counter", "Runs started, by pipeline and source.");
  pairs(&out, "orchrun_runs_started_total", "pipeline", "source", runs_started_);
  header(&out, "orchrun_runs_finished_total", "counter", "Runs finished, by pipeline and status.");
  pairs(&out, "orchrun_runs_finished_total", "pipeline", "status", runs_finished_);
  header(&out, "orchrun_node_attempts_total", "counter",
         "Node attempts finished, by pipeline and status.");
  pairs(&out, "orchrun_node_attempts_total", "pipeline", "status", node_attempts_);
  header(&out, "orchrun_run_duration_seconds", "histogram", "Run durations, by pipeline.");
  run_seconds_.render(&out, "orchrun_run_duration_seconds", "pipeline");
  header(&out, "orchrun_node_duration_seconds", "histogram",
         "Node attempt durations, by pipeline.");
  node_seconds_.render(&out, "orchrun_node_duration_seconds", "pipeline");
  header(&out, "orchrun_runs_in_flight", "gauge", "Runs active in this process.");
  out += "orchrun_runs_in_flight " + std::to_string(g.runs_in_flight) + "\n";
  header(&out, "orchrun_runs", "gauge", "Runs in the store, by status.");
  for (auto& [status, n] : g.runs_by_status)
    out += "orchrun_runs{status=\"" + prom_escape(status) + "\"} " + std::to_string(n) + "\n";
  int64_t queued = 0;
  for (auto& [status, n] : g.runs_by_status)
    if (status == "queued") queued = n;
  header(&out, "orchrun_runs_queued", "gauge", "Runs waiting for a concurrency slot.");
  out += "orchrun_runs_queued " + std::to_string(queued) + "\n";
  header(&out, "orchrun_webhook_deliveries_total", "counter",
         "Webhook deliveries, by pipeline and outcome.");
  pairs(&out, "orchrun_webhook_deliveries_total", "pipeline", "outcome", webhooks_);
  header(&out, "orchrun_reloads_total", "counter", "Pipeline file loads, by outcome.");
  for (auto& [o, n] : reloads_)
    out += "orchrun_reloads_total{outcome=\"" + prom_escape(o) + "\"} " + std::to_string(n) + "\n";
  header(&out, "orchrun_pipelines", "gauge", "Pipelines hosted, by state.");
  out += "orchrun_pipelines{state=\"active\"} " + std::to_string(g.pipelines_active) + "\n";
  out += "orchrun_pipelines{state=\"invalid\"} " + std::to_string(g.pipelines_invalid) + "\n";
  header(&out, "orchrun_http_responses_total", "counter", "HTTP responses, by status code.");
  for (auto& [code, n] : http_)
    out += "orchrun_http_responses_total{code=\"" + std::to_string(code) + "\"} " +
           std::to_string(n) + "\n";
  header(&out, "orchrun_http_refused_total", "counter",
         "Requests refused by the HTTP layer: malformed or too large (400, 413, 431, 505), "
         "or too slow (408).");
  out += "orchrun_http_refused_total{reason=\"bad_request\"} " +
         std::to_string(g.http_bad_requests) + "\n";
  out += "orchrun_http_refused_total{reason=\"timeout\"} " + std::to_string(g.http_timeouts) + "\n";
  header(&out, "orchrun_http_connections_accepted_total", "counter", "HTTP connections accepted.");
  out += "orchrun_http_connections_accepted_total " + std::to_string(g.http_connections_accepted) +
         "\n";
  header(&out, "orchrun_http_connections", "gauge", "Open HTTP connections.");
  out += "orchrun_http_connections " + std::to_string(g.http_connections) + "\n";
  header(&out, "orchrun_sse_clients", "gauge", "Clients of /api/events.");
  out += "orchrun_sse_clients " + std::to_string(g.sse_clients) + "\n";
  header(&out, "orchrun_store_commits_total", "counter",
         "SQLite transactions committed by this process (each group-commits a wave of work).");
  out += "orchrun_store_commits_total " + std::to_string(g.store_commits) + "\n";
  header(&out, "orchrun_store_errors_total", "counter",
         "Commits of the store that failed, by kind (full: the disk of the database is full; "
         "the writes are held and committed again once there is room).");
  out += "orchrun_store_errors_total{kind=\"full\"} " + std::to_string(g.store_full_errors) + "\n";
  header(&out, "orchrun_store_full", "gauge",
         "1 while the disk of the database is full: new work is refused (503 store_full) and "
         "the runs wait in memory.");
  out += std::string("orchrun_store_full ") + (g.store_full ? "1" : "0") + "\n";
  header(&out, "process_start_time_seconds", "gauge", "Start time of the process (unix).");
  out += "process_start_time_seconds " + fmt_double(g.start_time_s) + "\n";
  header(&out, "orchrun_build_info", "gauge", "Version of orchrun.");
  out += std::string("orchrun_build_info{version=\"") + ORCHRUN_VERSION + "\"} 1\n";
  return out;
}

}  // namespace orch
