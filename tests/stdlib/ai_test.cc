// o.ai.rules (deterministic, local) and o.ai.chat against a fake OpenAI / Anthropic server on
// 127.0.0.1 that checks what is sent and answers in the providers' real response formats.
#include <stdlib.h>

#include <catch2/catch.hpp>

#include "http_test_server.h"
#include "lua_eval.h"
#include "base/json_util.h"
#include "test_util.h"

using namespace orch;
using namespace orch::test;

namespace {

const char* kKey = "sk-test-0123456789abcdef";

// A pipeline whose one node calls o.ai.chat with ctx.input.chat (base_url filled in).
const char* kChat = R"(
  local o = require "orch"
  return o.pipeline "chat" {
    o.node("chat", function(ctx)
      local opts = ctx.input.chat
      opts.base_url = ctx.input.base_url
      opts.api_key_secret = "TEST_AI_KEY"
      return o.ai.chat(opts)
    end),
  }
)";

std::string chat_input(const HttpTestServer& srv, const std::string& base_path, const json& chat) {
  return dump_json(json{{"base_url", srv.url(base_path)}, {"chat", chat}});
}

json schema() {
  return json::parse(R"({"type":"object","required":["severity","causes"],
    "properties":{"severity":{"type":"string","enum":["critical","warning","info"]},
                  "causes":{"type":"array","items":{"type":"string"}}}})");
}

std::string openai_answer(const std::string& content) {
  json j{{"id", "chatcmpl-9abc"},
         {"object", "chat.completion"},
         {"created", 1715600000},
         {"model", "gpt-4o-mini-2024-07-18"},
         {"choices", json::array({{{"index", 0},
                                   {"message", {{"role", "assistant"}, {"content", content}}},
                                   {"logprobs", nullptr},
                                   {"finish_reason", "stop"}}})},
         {"usage", {{"prompt_tokens", 52}, {"completion_tokens", 17}, {"total_tokens", 69}}},
         {"system_fingerprint", "fp_44709d6fcb"}};
  return dump_json(j);
}

std::string anthropic_answer(const std::string& text) {
  json j{{"id", "msg_01XFDUDYJgAACzvnptvVoYEL"},
         {"type", "message"},
         {"role", "assistant"},
         {"model", "claude-3-5-haiku-20241022"},
         {"content", json::array({{{"type", "text"}, {"text", text}}})},
         {"stop_reason", "end_turn"},
         {"stop_sequence", nullptr},
         {"usage", {{"input_tokens", 40}, {"output_tokens", 12}}}};
  return dump_json(j);
}

struct Env {
  Env() { setenv("ORCHRUN_SECRET_TEST_AI_KEY", kKey, 1); }
  ~Env() { unsetenv("ORCHRUN_SECRET_TEST_AI_KEY"); }
};

json output(const RunSummary& s) {
  INFO("run: " << s.status << " " << s.error_type << " " << s.error_message);
  REQUIRE(s.status == "succeeded");
  return parse_json(s.output_json, nullptr);
}

bool retryable(Harness& h, const RunSummary& s) {
  return query_int(h.db_path, "select retryable from node_runs where run_id='" + s.run_id +
                                  "' and node_id='chat'") == 1;
}

}  // namespace

TEST_CASE("o.ai.rules: deterministic analyses of a few incidents", "[ai]") {
  LuaEval eval;
  auto analyze = [&](const std::string& incident, const std::string& context) {
    return eval("local i = o.ingest.generic(" + incident +
                ", { store = false })\n"
                "local a = o.ai.rules(i, " +
                context +
                ")\n"
                "return { a.analyzer, a.severity, a.summary, a.matched, a.confidence, "
                "#a.recommendations > 0 }");
  };
  // Disk full, and the context shows a disk above 95%: critical.
  CHECK(
      analyze(R"({ title = "NodeFilesystemAlmostOutOfSpace", severity = "warning",
                     labels = { instance = "db-1" } })",
              R"({ system = { disk = { { path = "/var", used_percent = 97.5 } } } })") ==
      R"J(["rules","critical","critical: NodeFilesystemAlmostOutOfSpace on db-1 - A filesystem is filling up",["disk_full"],0.7,true])J");
  // Instance down with no severity label: the rule's floor (critical).
  CHECK(
      analyze(R"({ title = "InstanceDown", labels = { instance = "10.0.0.7:9100" } })", "nil") ==
      R"J(["rules","critical","critical: InstanceDown on 10.0.0.7:9100 - The target stopped answering",["instance_down"],0.6,true])J");
  // OOMKilled in a crash loop; memory above 95% raises to critical.
  CHECK(
      analyze(R"({ title = "KubePodCrashLooping", severity = "warning",
                     labels = { pod = "api-1", reason = "OOMKilled" } })",
              R"({ system = { memory = { used_percent = 96 } } })") ==
      R"J(["rules","critical","critical: KubePodCrashLooping on api-1 - A process was killed by the kernel's OOM killer",["oom_killed","crash_loop","high_memory"],0.5,true])J");
  // Certificate expiry, info from labels; nothing in the context.
  CHECK(
      analyze(R"({ title = "SSLCertExpiringSoon", severity = "info" })", "{}") ==
      R"J(["rules","info","info: SSLCertExpiringSoon - A TLS certificate is about to expire (or has expired)",["certificate_expiry"],0.6,true])J");
  // Nothing matches: low confidence, unknown severity becomes warning.
  CHECK(analyze(R"({ title = "Weird thing" })", "{}") ==
        R"J(["rules","warning","warning: Weird thing",[],0.2,true])J");
  // A resolved alert is info.
  CHECK(
      analyze(R"({ title = "HighLatency", status = "resolved", severity = "critical" })", "{}") ==
      R"J(["rules","info","resolved info: HighLatency - Requests are slow",["latency"],0.6,true])J");
  // Same input, same output.
  std::string a = analyze(R"({ title = "HighCPU", labels = { host = "x" } })",
                          R"({ system = { cpu = { percent = 99, cores = 2 } } })");
  CHECK(a == analyze(R"({ title = "HighCPU", labels = { host = "x" } })",
                     R"({ system = { cpu = { percent = 99, cores = 2 } } })"));
}

TEST_CASE("o.ai.chat: OpenAI chat completions with a schema", "[ai]") {
  Env env;
  HttpTestServer srv([](const HttpTestRequest&) {
    return HttpTestResponse::json(
        200, openai_answer(R"({"severity":"critical","causes":["disk full on /var"]})"));
  });
  Harness h;
  auto s = h.run(kChat, chat_input(srv, "/v1",
                                   json{{"provider", "openai"},
                                        {"model", "gpt-4o-mini"},
                                        {"system", "You are an SRE."},
                                        {"prompt", "Disk full on db-1"},
                                        {"schema", schema()},
                                        {"max_tokens", 300},
                                        {"temperature", 0}}));
  json out = output(s);
  CHECK(out["provider"] == "openai");
  CHECK(out["model"] == "gpt-4o-mini-2024-07-18");
  CHECK(out["json"]["severity"] == "critical");
  CHECK(out["json"]["causes"][0] == "disk full on /var");
  CHECK(out["usage"]["input_tokens"] == 52);
  CHECK(out["usage"]["output_tokens"] == 17);
  CHECK(out["text"] == R"({"severity":"critical","causes":["disk full on /var"]})");

  REQUIRE(srv.request_count() == 1);
  auto r = srv.requests()[0];
  CHECK(r.method == "POST");
  CHECK(r.path == "/v1/chat/completions");
  CHECK(r.header("Authorization") == std::string("Bearer ") + kKey);
  CHECK(r.header("Content-Type") == "application/json");
  json body = parse_json(r.body, nullptr);
  CHECK(body["model"] == "gpt-4o-mini");
  CHECK(body["max_tokens"] == 300);
  CHECK(body["temperature"] == 0);
  REQUIRE(body["messages"].size() == 2);
  CHECK(body["messages"][0] == json{{"role", "system"}, {"content", "You are an SRE."}});
  CHECK(body["messages"][1] == json{{"role", "user"}, {"content", "Disk full on db-1"}});
  CHECK(body["response_format"]["type"] == "json_schema");
  CHECK(body["response_format"]["json_schema"]["name"] == "answer");
  CHECK(body["response_format"]["json_schema"]["schema"] == schema());
  // The key is a secret: nowhere in the store.
  CHECK(query_int(h.db_path, std::string("select count(*) from events where data like '%") + kKey +
                                 "%'") == 0);
}

TEST_CASE("o.ai.chat: Anthropic messages", "[ai]") {
  Env env;
  HttpTestServer srv([](const HttpTestRequest&) {
    return HttpTestResponse::json(
        200, anthropic_answer("```json\n{\"severity\":\"warning\",\"causes\":[\"cpu\"]}\n```"));
  });
  Harness h;
  auto s = h.run(
      kChat,
      chat_input(srv, "",
                 json{{"provider", "anthropic"},
                      {"model", "claude-3-5-haiku-latest"},
                      {"system", "You are an SRE."},
                      {"messages", json::array({{{"role", "user"}, {"content", "CPU high"}}})},
                      {"schema", schema()}}));
  json out = output(s);
  CHECK(out["provider"] == "anthropic");
  CHECK(out["model"] == "claude-3-5-haiku-20241022");
  CHECK(out["json"]["severity"] == "warning");
  CHECK(out["usage"]["input_tokens"] == 40);
  CHECK(out["usage"]["total_tokens"] == 52);

  auto r = srv.requests().at(0);
  CHECK(r.method == "POST");
  CHECK(r.path == "/v1/messages");
  CHECK(r.header("x-api-key") == kKey);
  CHECK(r.header("anthropic-version") == "2023-06-01");
  CHECK_FALSE(r.has_header("Authorization"));
  json body = parse_json(r.body, nullptr);
  CHECK(body["model"] == "claude-3-5-haiku-latest");
  CHECK(body["max_tokens"] == 1024);
  CHECK(body["messages"] == json::array({{{"role", "user"}, {"content", "CPU high"}}}));
  CHECK_THAT(body["system"].get<std::string>(), Catch::StartsWith("You are an SRE."));
  CHECK_THAT(body["system"].get<std::string>(), Catch::Contains("JSON Schema"));
  CHECK_FALSE(body.contains("response_format"));
}

TEST_CASE("o.ai.chat: an answer that does not match the schema is a retryable error", "[ai]") {
  Env env;
  HttpTestServer srv([](const HttpTestRequest&) {
    return HttpTestResponse::json(200, openai_answer(R"({"severity":"bad","causes":[]})"));
  });
  Harness h;
  auto s = h.run(
      kChat,
      chat_input(
          srv, "",
          json{{"provider", "openai"}, {"model", "m"}, {"prompt", "x"}, {"schema", schema()}}));
  CHECK(s.status == "failed");
  CHECK(s.error_type == "ai_schema");
  CHECK_THAT(s.error_message,
             Catch::Contains("ai.chat: answer does not match the schema: field severity must be "
                             "one of critical, warning, info, got bad"));
  CHECK(retryable(h, s));

  HttpTestServer srv2([](const HttpTestRequest&) {
    return HttpTestResponse::json(200, openai_answer(R"({"causes":["a"]})"));
  });
  s = h.run(
      kChat,
      chat_input(
          srv2, "",
          json{{"provider", "openai"}, {"model", "m"}, {"prompt", "x"}, {"schema", schema()}}));
  CHECK_THAT(s.error_message, Catch::Contains("field severity is required"));
  CHECK(retryable(h, s));
}

TEST_CASE("o.ai.chat: 429 with Retry-After and 5xx are retryable; 400 is not", "[ai]") {
  Env env;
  HttpTestServer srv([](const HttpTestRequest& r) {
    if (r.path == "/429/chat/completions")
      return HttpTestResponse::json(
                 429, R"({"error":{"message":"Rate limit reached","type":"requests"}})")
          .header("Retry-After", "7");
    if (r.path == "/503/chat/completions")
      return HttpTestResponse::json(503, R"({"error":{"message":"overloaded"}})");
    return HttpTestResponse::json(
        400, R"({"error":{"message":"Invalid 'messages': empty","type":"invalid_request_error"}})");
  });
  Harness h;
  json chat{{"provider", "openai"}, {"model", "m"}, {"prompt", "x"}};

  auto s = h.run(kChat, chat_input(srv, "/429", chat));
  CHECK(s.status == "failed");
  CHECK(s.error_type == "ai_http");
  CHECK_THAT(s.error_message, Catch::Contains("ai.chat (openai): HTTP 429: Rate limit reached"));
  CHECK(retryable(h, s));
  json ev = parse_json(query_str(h.db_path, "select data from events where run_id='" + s.run_id +
                                                "' and kind='node.failed'"),
                       nullptr);
  CHECK(ev["details"]["retry_after_ms"] == 7000);
  CHECK(ev["details"]["status"] == 429);

  s = h.run(kChat, chat_input(srv, "/503", chat));
  CHECK(s.error_type == "ai_http");
  CHECK(retryable(h, s));

  s = h.run(kChat, chat_input(srv, "/400", chat));
  CHECK(s.error_type == "ai_http");
  CHECK_THAT(s.error_message, Catch::Contains("HTTP 400: Invalid 'messages': empty"));
  CHECK_FALSE(retryable(h, s));
}

TEST_CASE("o.ai.chat: a slow provider times out (retryable)", "[ai]") {
  Env env;
  HttpTestServer srv([](const HttpTestRequest&) {
    return HttpTestResponse::json(200, openai_answer("late")).after_ms(5000);
  });
  Harness h;
  auto s = h.run(
      kChat,
      chat_input(
          srv, "",
          json{{"provider", "openai"}, {"model", "m"}, {"prompt", "x"}, {"timeout", "200ms"}}));
  CHECK(s.status == "failed");
  CHECK(s.error_type == "ai_http");
  CHECK_THAT(s.error_message, Catch::Contains("(timeout)"));
  CHECK(retryable(h, s));
  srv.stop();
}

TEST_CASE("o.ai.chat: a malformed body from the provider is a clear error", "[ai]") {
  Env env;
  HttpTestServer srv([](const HttpTestRequest& r) {
    if (r.path == "/notjson/chat/completions")
      return HttpTestResponse::json(200, R"({"choices": [ {"message": )");
    return HttpTestResponse::json(200, R"({"id":"x","choices":[]})");
  });
  Harness h;
  json chat{{"provider", "openai"}, {"model", "m"}, {"prompt", "x"}};
  auto s = h.run(kChat, chat_input(srv, "/notjson", chat));
  CHECK(s.error_type == "ai_http");
  CHECK_THAT(s.error_message,
             Catch::Contains("ai.chat (openai): malformed response: the body is not JSON"));
  s = h.run(kChat, chat_input(srv, "/nochoices", chat));
  CHECK_THAT(s.error_message, Catch::Contains("malformed response: no choices[1].message.content"));
}

TEST_CASE("o.ai.chat: misuse: unknown provider, unknown option, no prompt", "[ai]") {
  Env env;
  HttpTestServer srv;
  Harness h;
  auto s = h.run(
      kChat, chat_input(srv, "", json{{"provider", "gemini"}, {"model", "m"}, {"prompt", "x"}}));
  CHECK(s.error_type == "ai_config");
  CHECK_THAT(s.error_message,
             Catch::Contains("ai.chat: unknown provider 'gemini' (known: anthropic, openai)"));
  CHECK_FALSE(retryable(h, s));
  s = h.run(kChat,
            chat_input(srv, "", json{{"provider", "openai"}, {"model", "m"}, {"promt", "x"}}));
  CHECK_THAT(s.error_message, Catch::Contains("unknown option 'promt' (known: provider, model"));
  s = h.run(kChat, chat_input(srv, "", json{{"provider", "openai"}, {"model", "m"}}));
  CHECK_THAT(s.error_message, Catch::Contains("give a prompt or messages"));
  CHECK(srv.request_count() == 0);
}
