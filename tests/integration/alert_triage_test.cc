// pipelines/alert-triage.lua end to end through the real binary, with stand-ins for the
// third-party services on 127.0.0.1: an OpenAI-compatible provider, a Slack incoming webhook
// and PagerDuty's Events API, each checking what it receives.
#include <catch2/catch.hpp>
#include <mutex>

#include "http_test_server.h"
#include "base/json_util.h"
#include "test_util.h"

using namespace orch;
using namespace orch::test;

namespace {

std::string openai_answer(const json& content) {
  json j{
      {"id", "chatcmpl-1"},
      {"object", "chat.completion"},
      {"model", "gpt-4o-mini"},
      {"choices", json::array({{{"index", 0},
                                {"message", {{"role", "assistant"}, {"content", content.dump()}}},
                                {"finish_reason", "stop"}}})},
      {"usage", {{"prompt_tokens", 10}, {"completion_tokens", 5}, {"total_tokens", 15}}}};
  return j.dump();
}

const char* kPayload = R"({"version":"4","status":"firing","receiver":"orchrun",
  "groupKey":"{}:{alertname=\"DiskFull\"}","groupLabels":{"alertname":"DiskFull"},
  "commonLabels":{"alertname":"DiskFull","severity":"warning"},"commonAnnotations":{},
  "externalURL":"http://alertmanager:9093","truncatedAlerts":0,
  "alerts":[{"status":"firing","labels":{"alertname":"DiskFull","instance":"db-1:9100",
  "severity":"warning"},"annotations":{"summary":"Disk almost full on db-1"},
  "startsAt":"2026-11-22T08:00:00Z","endsAt":"0001-01-01T00:00:00Z",
  "generatorURL":"http://prometheus/graph","fingerprint":"d1skfu11"}]})";

}  // namespace

TEST_CASE("alert-triage: AI analysis pages through PagerDuty and Slack with secrets",
          "[ai][notify][triage]") {
  std::mutex mu;
  int ai_status = 200;
  HttpTestServer srv([&](const HttpTestRequest& r) {
    std::lock_guard<std::mutex> lock(mu);
    if (r.path == "/v1/chat/completions") {
      if (ai_status != 200) return HttpTestResponse::text(ai_status, "provider down");
      return HttpTestResponse::json(
          200, openai_answer({{"severity", "critical"},
                              {"summary", "db-1 disk will be full within the hour"},
                              {"probable_causes", {"WAL archiving stopped"}},
                              {"recommendations", {"free space on /var/lib/postgresql"}},
                              {"confidence", 0.8}}));
    }
    if (r.path == "/slack/hook") return HttpTestResponse::text(200, "ok");
    if (r.path == "/pd/v2/enqueue")
      return HttpTestResponse::json(
          202, R"({"status":"success","message":"Event processed","dedup_key":"d1skfu11"})");
    return HttpTestResponse::text(404, "no such path");
  });
  TempDir tmp;
  std::string db = tmp.file("t.db");
  std::string pipeline = source_dir() + "/pipelines/alert-triage.lua";
  std::vector<std::string> env = {"ORCHRUN_SECRET_OPENAI_API_KEY=sk-local-test-key-123",
                                  "ORCHRUN_SECRET_SLACK_WEBHOOK_URL=" + srv.url("/slack/hook"),
                                  "ORCHRUN_SECRET_PAGERDUTY_ROUTING_KEY=R0UTING-KEY-abcdef"};
  json input{{"payload", json::parse(kPayload)}, {"provider", "openai"},
             {"model", "gpt-4o-mini"},           {"base_url", srv.url("/v1")},
             {"pagerduty_url", srv.url("/pd")},  {"notify_path", tmp.file("notes.jsonl")}};

  SECTION("the provider answers: critical, paged") {
    auto r = orchrun({pipeline, "--input", input.dump(), "--json", "--quiet"}, db, env);
    INFO(r.out << r.err);
    REQUIRE(r.exit_code == 0);
    std::string run = query_str(db, "select id from runs");
    CHECK(query_str(db,
                    "select json_extract(output, '$.analyzer') from node_runs where "
                    "node_id='analyze' and status='succeeded'") == "ai");
    CHECK(query_str(db,
                    "select node_id from node_runs where node_id like 'route/%' and "
                    "status='succeeded'") == "route/page");
    // The requests, as the services would see them.
    bool saw_ai = false, saw_slack = false, saw_pd = false;
    for (auto& q : srv.requests()) {
      json body = parse_json(q.body, nullptr);
      if (q.path == "/v1/chat/completions") {
        saw_ai = true;
        CHECK(q.header("Authorization") == "Bearer sk-local-test-key-123");
        CHECK(body["model"] == "gpt-4o-mini");
        CHECK(body["response_format"]["type"] == "json_schema");
        CHECK(body["messages"].dump().find("Disk almost full on db-1") != std::string::npos);
      } else if (q.path == "/slack/hook") {
        saw_slack = true;
        CHECK(q.method == "POST");
        CHECK(body.contains("blocks"));
        CHECK(q.body.find("DiskFull") != std::string::npos);
      } else if (q.path == "/pd/v2/enqueue") {
        saw_pd = true;
        CHECK(body["routing_key"] == "R0UTING-KEY-abcdef");
        CHECK(body["event_action"] == "trigger");
        CHECK(body["dedup_key"] == "d1skfu11");  // the incident's fingerprint
        CHECK(body["payload"]["severity"] == "critical");
      }
    }
    CHECK(saw_ai);
    CHECK(saw_slack);
    CHECK(saw_pd);
    // The local notification, the incident, and no secret anywhere in the store.
    CHECK(read_file(tmp.file("notes.jsonl")).find("DiskFull") != std::string::npos);
    CHECK(query_int(db, "select count(*) from incidents where fingerprint='d1skfu11'") == 1);
    CHECK(query_int(db, "select count(*) from events where run_id='" + run +
                            "' and fingerprint='d1skfu11'") > 3);
    for (const char* secret : {"sk-local-test-key-123", "R0UTING-KEY-abcdef", "/slack/hook"}) {
      INFO(secret);
      CHECK(query_int(db, std::string("select count(*) from events where data like '%") + secret +
                              "%'") == 0);
      CHECK(query_int(db, std::string("select count(*) from node_runs where output like '%") +
                              secret + "%'") == 0);
      CHECK(r.out.find(secret) == std::string::npos);
    }
  }

  SECTION("the provider fails: the rules analyze instead, and the alert is routed by them") {
    ai_status = 500;
    auto r = orchrun({pipeline, "--input", input.dump(), "--json", "--quiet"}, db, env);
    INFO(r.out << r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(query_int(db,
                    "select count(*) from node_runs where node_id='analyze' and "
                    "status='failed'") == 2);  // retry = 2, then the fallback
    CHECK(query_str(db,
                    "select kind || ':' || json_extract(output, '$.analyzer') from "
                    "node_runs where node_id='analyze' and status='succeeded'") ==
          "fallback:rules");
  }
}
