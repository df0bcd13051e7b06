// o.ingest: real Alertmanager v4 and Grafana payloads normalized field by field, incidents
// stored and deduplicated by fingerprint across runs, events tagged with the run's incident,
// and payloads of the wrong shape refused (naming the field) with nothing stored.
#include <catch2/catch.hpp>

#include "lua_eval.h"
#include "base/json_util.h"
#include "test_util.h"

using namespace orch;
using namespace orch::test;

namespace {

std::string fixture(const std::string& name) {
  return read_file(source_dir() + "/tests/fixtures/" + name);
}

const char* kIngest = R"(
  local o = require "orch"
  return o.pipeline "ingest" {
    o.node("ingest", function(ctx)
      local kind = ctx.input.kind
      return { incidents = o.ingest[kind](ctx.input.payload) }
    end),
    o.node("after", function(ctx) ctx.log("after") return { ok = true } end),
  }
)";

std::string input(const std::string& kind, const std::string& payload_json) {
  return R"({"kind":")" + kind + R"(","payload":)" + payload_json + "}";
}

json output(const RunSummary& s) {
  INFO("run: " << s.status << " " << s.error_type << " " << s.error_message);
  REQUIRE(s.status == "succeeded");
  json j = parse_json(s.output_json, nullptr);
  REQUIRE(!j.is_discarded());
  return j;
}

json incidents_of(Harness& h, const RunSummary& s) {
  output(s);
  // The run's output is the last node's; the ingest node's output is in node_runs.
  std::string out = query_str(h.db_path, "select output from node_runs where run_id='" + s.run_id +
                                             "' and node_id='ingest'");
  json j = parse_json(out, nullptr);
  REQUIRE(j.contains("incidents"));
  return j["incidents"];
}

int64_t rows(Harness& h, const std::string& table) {
  return query_int(h.db_path, "select count(*) from " + table);
}

}  // namespace

TEST_CASE("o.ingest.alertmanager: a v4 payload, normalized field by field and stored", "[ingest]") {
  Harness h;
  auto s = h.run(kIngest, input("alertmanager", fixture("alertmanager_v4.json")));
  json inc = incidents_of(h, s);
  REQUIRE(inc.size() == 3);

  const json& a = inc[0];
  CHECK(a["source"] == "alertmanager");
  CHECK(a["fingerprint"] == "5b6c3f2a9d1e8c47");
  CHECK(a["title"] == "NodeFilesystemAlmostOutOfSpace");
  CHECK(a["severity"] == "critical");
  CHECK(a["status"] == "firing");
  CHECK(a["labels"]["mountpoint"] == "/var/lib/docker");
  CHECK(a["labels"].size() == 8);
  CHECK(a["annotations"]["runbook_url"] ==
        "https://runbooks.prometheus-operator.dev/runbooks/node/nodefilesystemalmostoutofspace");
  CHECK(a["starts_at"] == "2024-05-14T08:12:27.613Z");
  CHECK_FALSE(a.contains("ends_at"));  // 0001-01-01T00:00:00Z: not ended
  CHECK(a["summary"] == "Filesystem has less than 3% space left.");
  CHECK(a["description"] ==
        "Filesystem on /dev/nvme0n1p1 at 10.0.3.17:9100 has only 2.91% available space left.");
  CHECK(a["generator_url"] ==
        "http://prometheus-k8s-0:9090/graph?g0.expr=node_filesystem_avail_bytes&g0.tab=1");
  CHECK(a["receiver"] == "sre-webhook");
  CHECK(a["external_url"] == "http://alertmanager.monitoring.svc:9093");
  CHECK(a["new"] == true);
  CHECK(a["count"] == 1);
  CHECK(a["id"].get<int64_t>() > 0);
  CHECK(a["first_seen"].get<int64_t>() > 0);

  CHECK(inc[1]["severity"] == "warning");
  CHECK(inc[1]["fingerprint"] == "a81d03c7e4f9b612");
  const json& r = inc[2];
  CHECK(r["status"] == "resolved");
  CHECK(r["ends_at"] == "2024-05-14T08:05:12.613Z");
  CHECK(r.contains("resolved_at"));

  CHECK(rows(h, "incidents") == 3);
  CHECK(rows(h, "incident_runs") == 3);
  auto db = query(h.db_path,
                  "select fingerprint, title, severity, status, source, count, resolved_at is "
                  "not null, last_run_id from incidents order by id");
  CHECK(db[0] == std::vector<std::string>{"5b6c3f2a9d1e8c47", "NodeFilesystemAlmostOutOfSpace",
                                          "critical", "firing", "alertmanager", "1", "0",
                                          s.run_id});
  CHECK(db[2][3] == "resolved");
  CHECK(db[2][6] == "1");
  json labels =
      parse_json(query_str(h.db_path, "select labels from incidents where id=1"), nullptr);
  CHECK(labels["device"] == "/dev/nvme0n1p1");
}

TEST_CASE("o.ingest.grafana: unified alerting payload with values and URLs", "[ingest]") {
  Harness h;
  auto s = h.run(kIngest, input("grafana", fixture("grafana.json")));
  json inc = incidents_of(h, s);
  REQUIRE(inc.size() == 2);
  const json& a = inc[0];
  CHECK(a["source"] == "grafana");
  CHECK(a["fingerprint"] == "c6eadffa33fcdf37");
  CHECK(a["title"] == "High memory usage");
  CHECK(a["severity"] == "critical");
  CHECK(a["status"] == "firing");
  CHECK(a["starts_at"] == "2024-05-14T09:51:03.157076+02:00");
  CHECK_FALSE(a.contains("ends_at"));
  CHECK(a["values"]["B"] == 97.12);
  CHECK(a["dashboard_url"] == "https://grafana.example.com/d/rYdddlPWk?orgId=1");
  CHECK(a["panel_url"] == "https://grafana.example.com/d/rYdddlPWk?orgId=1&viewPanel=4");
  CHECK(a["silence_url"].get<std::string>().find("alerting/silence/new") != std::string::npos);
  CHECK(a["org_id"] == 1);
  CHECK(a["state"] == "alerting");
  CHECK(a["group_title"] == "[FIRING:1, RESOLVED:1]  (Infrastructure blue)");
  CHECK(a["summary"] == "Memory usage is critical on web-03");
  const json& b = inc[1];
  CHECK(b["status"] == "resolved");
  CHECK(b["severity"] == "warning");
  CHECK(b["ends_at"] == "2024-05-14T09:56:03.157076+02:00");
  CHECK_FALSE(b.contains("values"));         // null
  CHECK_FALSE(b.contains("dashboard_url"));  // ""
  CHECK(query_str(h.db_path, "select source from incidents where fingerprint='bc97ff14869b13e3'") ==
        "grafana");
}

TEST_CASE("o.ingest.generic: minimal shape, severity aliases, computed fingerprint", "[ingest]") {
  LuaEval eval;
  // sha256 of the labels sorted by name, "name=value\n" each.
  std::string r = eval(R"(
    local a = o.ingest.generic({ title = "Disk full", severity = "P1",
                                 labels = { host = "db-1", alertname = "DiskFull" } },
                               { store = false })[1]
    local b = o.ingest.generic({ title = "Other title", labels = { alertname = "DiskFull",
                                                                 host = "db-1" } },
                               { store = false })[1]
    return { a.fingerprint == b.fingerprint, a.fingerprint, a.severity, a.status, a.source,
             b.severity, a.summary }
  )");
  json j = parse_json(r, nullptr);
  INFO(r);
  REQUIRE(j.is_array());
  CHECK(j[0] == true);
  CHECK(j[1].get<std::string>().size() == 64);
  CHECK(j[2] == "critical");
  CHECK(j[3] == "firing");
  CHECK(j[4] == "generic");
  CHECK(j[5] == "unknown");
  CHECK(j[6] == "Disk full");

  auto sev = [&](const std::string& s) {
    return eval("return { o.ingest.generic({ title = 't', severity = '" + s +
                "' }, { store = false })[1].severity }");
  };
  CHECK(sev("crit") == R"(["critical"])");
  CHECK(sev("Warn") == R"(["warning"])");
  CHECK(sev("informational") == R"(["info"])");
  CHECK(sev("sev-2") == R"(["warning"])");
  CHECK(sev("whatever") == R"(["unknown"])");
}

TEST_CASE("o.ingest.generic: the computed fingerprint is sha256 of the sorted labels", "[ingest]") {
  LuaEval eval;
  std::string fp = eval(R"(return { o.ingest.generic({ title = "x",
      labels = { host = "db-1", alertname = "DiskFull" } }, { store = false })[1].fingerprint })");
  auto r = run_cmd({"sh", "-c", "printf 'alertname=DiskFull\\nhost=db-1\\n' | sha256sum"});
  CHECK(fp == "[\"" + r.out.substr(0, 64) + "\"]");
}

TEST_CASE("incidents: deduplicated by fingerprint across runs; resolved closes; refiring reopens",
          "[ingest]") {
  Harness h;
  std::string firing = R"({"title":"DiskFull","severity":"warning","labels":{"host":"db-1"}})";
  std::string resolved =
      R"({"title":"DiskFull","status":"resolved","severity":"warning","labels":{"host":"db-1"}})";
  auto s1 = h.run(kIngest, input("generic", firing));
  json i1 = incidents_of(h, s1)[0];
  CHECK(i1["new"] == true);
  CHECK(i1["count"] == 1);
  int64_t first_seen = i1["first_seen"];

  auto s2 = h.run(kIngest, input("generic", firing));
  json i2 = incidents_of(h, s2)[0];
  CHECK(i2["new"] == false);
  CHECK(i2["count"] == 2);
  CHECK(i2["id"] == i1["id"]);
  CHECK(i2["first_seen"] == first_seen);
  CHECK(i2["last_seen"].get<int64_t>() >= first_seen);
  CHECK(rows(h, "incidents") == 1);
  auto row = query(h.db_path,
                   "select count, status, first_seen, last_seen >= first_seen, last_run_id, "
                   "resolved_at is null from incidents");
  CHECK(row[0] ==
        std::vector<std::string>{"2", "firing", std::to_string(first_seen), "1", s2.run_id, "1"});

  auto s3 = h.run(kIngest, input("generic", resolved));
  json i3 = incidents_of(h, s3)[0];
  CHECK(i3["status"] == "resolved");
  CHECK(i3["count"] == 2);  // a resolution is not another firing
  row =
      query(h.db_path, "select count, status, resolved_at is not null, last_run_id from incidents");
  CHECK(row[0] == std::vector<std::string>{"2", "resolved", "1", s3.run_id});

  auto s4 = h.run(kIngest, input("generic", firing));
  incidents_of(h, s4);
  row = query(h.db_path, "select count, status, resolved_at is null from incidents");
  CHECK(row[0] == std::vector<std::string>{"3", "firing", "1"});
  CHECK(rows(h, "incident_runs") == 4);
  CHECK(query_int(h.db_path, "select count(*) from incident_runs where created=1") == 1);
}

TEST_CASE("incidents: a retried node counts its alerts once", "[ingest]") {
  Harness h;
  auto s = h.run(R"(
    local o = require "orch"
    return o.pipeline "retry" {
      o.node("ingest", function(ctx)
        local inc = o.ingest.generic { title = "Flaky", labels = { a = "1" } }
        if ctx.attempt == 1 then error("boom after ingest") end
        return { incidents = inc }
      end, { retry = { max = 2, base = "1ms" } }),
    }
  )");
  json out = output(s);
  CHECK(out["incidents"][0]["count"] == 1);
  CHECK(out["incidents"][0]["new"] == true);
  CHECK(query_int(h.db_path, "select count from incidents") == 1);
}

TEST_CASE("incidents: the run and every later event carry incident_id and fingerprint",
          "[ingest]") {
  Harness h;
  auto s = h.run(kIngest, input("alertmanager", fixture("alertmanager_v4.json")));
  output(s);
  int64_t id =
      query_int(h.db_path, "select id from incidents where fingerprint='5b6c3f2a9d1e8c47'");
  auto run =
      query(h.db_path, "select incident_id, fingerprint from runs where id='" + s.run_id + "'");
  CHECK(run[0] == std::vector<std::string>{std::to_string(id), "5b6c3f2a9d1e8c47"});

  auto events = h.store->events(s.run_id);
  REQUIRE(events.size() > 4);
  bool seen = false;
  for (const auto& e : events) {
    INFO(e.kind << " " << e.node);
    if (e.kind == "incident.recorded") seen = true;
    if (seen) {
      CHECK(e.incident_id == id);
      CHECK(e.fingerprint == "5b6c3f2a9d1e8c47");
    } else {
      CHECK(e.incident_id == 0);
    }
  }
  CHECK(seen);
  CHECK(events.back().kind == "run.succeeded");
  CHECK(query_int(h.db_path, "select count(*) from events where run_id='" + s.run_id +
                                 "' and kind='incident.recorded'") == 3);
  // The sinks (live view, logs) see the same.
  CHECK(h.log.events.back().incident_id == id);
  CHECK(h.log.events.back().fingerprint == "5b6c3f2a9d1e8c47");
}

TEST_CASE("o.ingest: a payload of the wrong shape names the field and stores nothing", "[ingest]") {
  json am = parse_json(fixture("alertmanager_v4.json"), nullptr);
  struct Case {
    std::string kind, payload, message;
  };
  std::vector<Case> cases;
  auto am_with = [&](auto change) {
    json p = am;
    change(p);
    return dump_json(p);
  };
  cases.push_back({"alertmanager", am_with([](json& p) { p["alerts"][1]["labels"] = "x"; }),
                   "o.ingest.alertmanager: alerts[2].labels must be an object, got string"});
  cases.push_back({"alertmanager", am_with([](json& p) { p["version"] = "3"; }),
                   "o.ingest.alertmanager: version must be \"4\""});
  cases.push_back({"alertmanager", am_with([](json& p) { p.erase("version"); }),
                   "version must be \"4\" (Alertmanager webhook format), got nothing"});
  cases.push_back({"alertmanager", am_with([](json& p) {
                     p["alerts"] = json::object({{"a", 1}});
                   }),
                   "alerts must be an array, got object"});
  cases.push_back({"alertmanager", am_with([](json& p) { p["alerts"][2]["status"] = "pending"; }),
                   "alerts[3].status must be \"firing\" or \"resolved\", got \"pending\""});
  cases.push_back({"alertmanager",
                   am_with([](json& p) { p["alerts"][0]["startsAt"] = "yesterday"; }),
                   "alerts[1].startsAt must be an ISO 8601 time"});
  cases.push_back({"alertmanager", am_with([](json& p) {
                     p["alerts"][0]["annotations"]["summary"] = json::array();
                   }),
                   "alerts[1].annotations.summary must be a string, got array"});
  cases.push_back({"alertmanager", am_with([](json& p) { p["alerts"][1].erase("labels"); }),
                   "o.ingest.alertmanager: alerts[2].labels is required (an object)"});
  cases.push_back({"grafana", R"({"status":"firing","orgId":"one","alerts":[]})",
                   "o.ingest.grafana: orgId must be a number, got string"});
  cases.push_back(
      {"generic", R"({"severity":"critical"})", "o.ingest.generic: title is required (a string)"});
  cases.push_back({"generic", R"([{"title":"a"},{"title":"b","labels":[1,2]}])",
                   "o.ingest.generic: [2].labels must be an object, got array"});
  cases.push_back(
      {"generic", R"("just text")", "o.ingest.generic: the payload must be an object, got string"});

  Harness h;
  for (const auto& c : cases) {
    INFO(c.kind << " " << c.payload.substr(0, 200));
    auto s = h.run(kIngest, input(c.kind, c.payload));
    CHECK(s.status == "failed");
    CHECK(s.error_type == "ingest");
    CHECK_THAT(s.error_message, Catch::Contains(c.message));
    CHECK(query_int(h.db_path, "select retryable from node_runs where run_id='" + s.run_id +
                                   "' and node_id='ingest'") == 0);
    CHECK(query_str(h.db_path, "select incident_id from runs where id='" + s.run_id + "'") == "");
  }
  CHECK(rows(h, "incidents") == 0);
  CHECK(rows(h, "incident_runs") == 0);
  CHECK(query_int(h.db_path, "select count(*) from events where incident_id is not null") == 0);
}
