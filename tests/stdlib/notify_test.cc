// o.notify from pipelines, in-process (real loop, store and scheduler): the HTTP drivers against
// HttpTestServer (what is sent, signatures, the delivery record, failure classification and
// the node's retries), email against a local aiosmtpd server, console and file.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <sstream>
#include <thread>

#include "http_test_server.h"
#include "base/json_util.h"
#include "test_util.h"

using namespace orch;
using namespace orch::test;

namespace {

json output(const RunSummary& s) {
  INFO("run: " << s.status << " " << s.error_type << " " << s.error_message);
  REQUIRE(s.status == "succeeded");
  json j = parse_json(s.output_json, nullptr);
  INFO(s.output_json);
  REQUIRE(!j.is_discarded());
  return j;
}

std::string input_with_url(const HttpTestServer& srv) {
  return dump_json(json{{"url", srv.url("")}});
}

std::string hmac_hex(const std::string& key, const std::string& data) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), mac, &n);
  std::string hex;
  char buf[3];
  for (unsigned i = 0; i < n; i++) {
    snprintf(buf, sizeof buf, "%02x", mac[i]);
    hex += buf;
  }
  return hex;
}

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

// Runs `call` (a Lua expression calling o.notify.*) in a node under pcall and returns what
// was raised: { ok, message, type, retryable, details }.
std::string catching(const std::string& call) {
  return R"(
    local o = require "orch"
    return o.pipeline "catch" {
      o.node("n", function(ctx)
        local ok, e = pcall(function() return )" +
         call + R"( end)
        if ok then return { ok = true, record = e } end
        if type(e) ~= "table" then return { ok = false, message = tostring(e), raw = true } end
        return { ok = false, message = e.message, type = e.type, retryable = e.retryable,
                 details = e.details }
      end),
    })";
}

int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  int port = ntohs(a.sin_port);
  close(fd);
  return port;
}

bool can_connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  close(fd);
  return ok;
}

// tests/smtp_test_server.py (aiosmtpd) on 127.0.0.1; each message lands as a JSON line in
// out_file.
class SmtpTestServer {
 public:
  explicit SmtpTestServer(const std::string& out_file, bool reject_rcpt = false)
      : out_(out_file), port_(free_port()) {
    std::vector<std::string> argv = {"/usr/bin/python3",
                                     source_dir() + "/tests/smtp_test_server.py",
                                     std::to_string(port_), out_};
    if (reject_rcpt) argv.push_back("--reject-rcpt");
    pid_ = spawn_quiet(argv);
    for (int i = 0; i < 1000 && !can_connect(port_); i++)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ~SmtpTestServer() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int st;
      waitpid(pid_, &st, 0);
    }
  }
  int port() const { return port_; }
  std::string url() const { return "smtp://127.0.0.1:" + std::to_string(port_); }
  std::vector<json> messages() const {
    std::vector<json> r;
    std::istringstream in(read_file(out_));
    std::string line;
    while (std::getline(in, line))
      if (!line.empty()) r.push_back(parse_json(line, nullptr));
    return r;
  }

 private:
  std::string out_;
  int port_;
  pid_t pid_ = -1;
};

bool have_aiosmtpd() {
  return run_cmd({"/usr/bin/python3", "-c", "import aiosmtpd"}).exit_code == 0;
}

}  // namespace

TEST_CASE("o.notify.webhook: JSON body signed with HMAC-SHA256; the delivery record", "[notify]") {
  HttpTestServer srv(
      [](const HttpTestRequest&) { return HttpTestResponse::json(200, R"({"id":"d-42"})"); });
  Harness h;
  auto s = h.run(R"(
    local o = require "orch"
    return o.pipeline "hook" {
      o.node("send", function(ctx)
        local a = o.notify.webhook { url = ctx.input.url .. "/hooks/in?token=abc",
                                     json = { event = "disk_full", host = "db1", n = 3 },
                                     secret = "s3cret-key", headers = { ["X-Env"] = "prod" } }
        local b = o.notify.webhook { url = ctx.input.url .. "/hooks/ts", body = "raw bytes\n",
                                     secret = "s3cret-key", signature_header = "X-Sig",
                                     timestamp_header = "X-Ts", method = "put" }
        return { a = a, b = b }
      end),
    })",
                 input_with_url(srv));
  json out = output(s);
  auto reqs = srv.requests();
  REQUIRE(reqs.size() == 2);
  const auto& a = reqs[0];
  CHECK(a.method == "POST");
  CHECK(a.path == "/hooks/in");
  CHECK(a.param("token") == "abc");
  CHECK(a.header("content-type") == "application/json");
  CHECK(a.header("x-env") == "prod");
  CHECK(a.body == R"({"event":"disk_full","host":"db1","n":3})");
  CHECK(a.header("x-orchrun-signature") == "sha256=" + hmac_hex("s3cret-key", a.body));
  json ra = out.at("a");
  CHECK(ra.at("driver") == "webhook");
  CHECK(ra.at("ok") == true);
  CHECK(ra.at("status") == 200);
  CHECK(ra.at("attempts") == 1);
  CHECK(ra.at("id") == "d-42");
  CHECK(ra.at("duration_ms").is_number());
  CHECK(ra.at("target") == srv.url("/hooks/in"));  // no query
  CHECK(!contains(s.output_json, "s3cret-key"));

  const auto& b = reqs[1];
  CHECK(b.method == "PUT");
  CHECK(b.body == "raw bytes\n");
  CHECK(b.header("content-type") == "text/plain; charset=utf-8");
  std::string ts = b.header("x-ts");
  REQUIRE(!ts.empty());
  CHECK(b.header("x-sig") == "sha256=" + hmac_hex("s3cret-key", ts + "." + b.body));
  CHECK(!b.has_header("x-orchrun-signature"));
  CHECK(h.close().empty());
}

TEST_CASE("o.notify.slack: text, and Block Kit built from an incident", "[notify]") {
  HttpTestServer srv([](const HttpTestRequest&) { return HttpTestResponse::text(200, "ok"); });
  Harness h;
  auto s = h.run(R"(
    local o = require "orch"
    return o.pipeline "slack" {
      o.node("send", function(ctx)
        local u = ctx.input.url .. "/services/T000/B000/XXXXSECRET"
        local a = o.notify.slack { webhook_url = u, text = "deploy done", channel = "#ops",
                                   username = "orchrun", icon_emoji = ":robot_face:" }
        local b = o.notify.slack { webhook_url = u, incident = {
            title = "Disk almost full", severity = "critical", status = "firing",
            summary = "/var is 97% full on db1", fingerprint = "fp-123",
            labels = { host = "db1", team = "storage" },
            links = { { text = "Grafana", url = "https://grafana.local/d/1" } } },
          analysis = { summary = "Logs grew", actions = { "rotate logs" } } }
        return { a = a, b = b }
      end),
    })",
                 input_with_url(srv));
  json out = output(s);
  auto reqs = srv.requests();
  REQUIRE(reqs.size() == 2);
  CHECK(reqs[0].method == "POST");
  CHECK(reqs[0].path == "/services/T000/B000/XXXXSECRET");
  CHECK(reqs[0].header("content-type") == "application/json");
  json a = parse_json(reqs[0].body, nullptr);
  CHECK(a == json{{"text", "deploy done"},
                  {"channel", "#ops"},
                  {"username", "orchrun"},
                  {"icon_emoji", ":robot_face:"}});
  json b = parse_json(reqs[1].body, nullptr);
  INFO(reqs[1].body);
  json blocks = b.at("blocks");
  REQUIRE(blocks.size() == 5);
  CHECK(blocks[0].at("type") == "header");
  CHECK(blocks[0].at("text").at("text") == ":rotating_light: [CRITICAL] Disk almost full");
  CHECK(blocks[1].at("text").at("text") == "/var is 97% full on db1");
  CHECK(contains(blocks[2].at("text").at("text"), "Logs grew"));
  CHECK(contains(blocks[2].at("text").at("text"), "rotate logs"));
  CHECK(blocks[3].at("fields").size() == 2);
  CHECK(blocks[3].at("fields")[0].at("text") == "*host*\ndb1");
  CHECK(blocks[4].at("type") == "context");
  CHECK(blocks[4].at("elements")[0].at("text") == "<https://grafana.local/d/1|Grafana>");
  CHECK(b.at("text") == "[CRITICAL] Disk almost full: /var is 97% full on db1");
  // The webhook's path is its token: the record keeps only scheme and host.
  CHECK(out.at("a").at("target") == srv.url(""));
  CHECK(out.at("b").at("status") == 200);
  CHECK(!contains(s.output_json, "XXXXSECRET"));
  CHECK(h.close().empty());
}

TEST_CASE("o.notify.pagerduty: trigger from an incident, resolve, acknowledge", "[notify]") {
  HttpTestServer srv([](const HttpTestRequest& r) {
    json in = parse_json(r.body, nullptr);
    if (in.value("event_action", "") == "acknowledge")
      return HttpTestResponse::json(202, "not json at all");  // malformed: still delivered
    return HttpTestResponse::json(
        202, dump_json(json{{"status", "success"},
                            {"message", "Event processed"},
                            {"dedup_key", in.value("dedup_key", "srv-made-key")}}));
  });
  Harness h;
  auto s = h.run(R"(
    local o = require "orch"
    return o.pipeline "pd" {
      o.node("send", function(ctx)
        local inc = { title = "API 5xx", severity = "warning", fingerprint = "fp-9",
                      source = "api-1", labels = { service = "api" },
                      links = { "https://runbook.local/api" } }
        local a = o.notify.pagerduty { routing_key = "R0UTINGKEY", incident = inc,
                                       base_url = ctx.input.url, component = "gateway" }
        inc.status = "resolved"
        local b = o.notify.pagerduty { routing_key = "R0UTINGKEY", incident = inc,
                                       base_url = ctx.input.url }
        local c = o.notify.pagerduty { routing_key = "R0UTINGKEY", action = "acknowledge",
                                       dedup_key = "fp-9", base_url = ctx.input.url }
        local d = o.notify.pagerduty { routing_key = "R0UTINGKEY", summary = "manual page",
                                       severity = "critical", base_url = ctx.input.url }
        return { a = a, b = b, c = c, d = d }
      end),
    })",
                 input_with_url(srv));
  json out = output(s);
  auto reqs = srv.requests();
  REQUIRE(reqs.size() == 4);
  CHECK(reqs[0].method == "POST");
  CHECK(reqs[0].path == "/v2/enqueue");
  CHECK(reqs[0].header("content-type") == "application/json");
  json a = parse_json(reqs[0].body, nullptr);
  CHECK(a.at("routing_key") == "R0UTINGKEY");
  CHECK(a.at("event_action") == "trigger");
  CHECK(a.at("dedup_key") == "fp-9");
  CHECK(a.at("payload").at("summary") == "API 5xx");
  CHECK(a.at("payload").at("severity") == "warning");
  CHECK(a.at("payload").at("source") == "api-1");
  CHECK(a.at("payload").at("component") == "gateway");
  CHECK(a.at("payload").at("custom_details").at("labels").at("service") == "api");
  CHECK(a.at("links")[0].at("href") == "https://runbook.local/api");
  json b = parse_json(reqs[1].body, nullptr);
  CHECK(b.at("event_action") == "resolve");
  CHECK(b.at("dedup_key") == "fp-9");
  CHECK(!b.contains("payload"));
  json c = parse_json(reqs[2].body, nullptr);
  CHECK(c.at("event_action") == "acknowledge");
  json d = parse_json(reqs[3].body, nullptr);
  CHECK(!d.contains("dedup_key"));
  CHECK(d.at("payload").at("source") == "orchrun");

  CHECK(out.at("a").at("driver") == "pagerduty");
  CHECK(out.at("a").at("status") == 202);
  CHECK(out.at("a").at("id") == "fp-9");
  CHECK(out.at("a").at("target") == srv.url("/v2/enqueue"));
  CHECK(out.at("c").at("ok") == true);  // malformed answer body: delivered, id from the request
  CHECK(out.at("c").at("id") == "fp-9");
  CHECK(out.at("d").at("id") == "srv-made-key");  // PagerDuty's own key when none was sent
  CHECK(!contains(s.output_json, "R0UTINGKEY"));
  CHECK(h.close().empty());
}

TEST_CASE("o.notify: failures are classified (5xx, 429 Retry-After, 4xx, timeout, refused)",
          "[notify]") {
  HttpTestServer srv([](const HttpTestRequest& r) {
    if (r.path == "/500") return HttpTestResponse::text(500, "boom");
    if (r.path == "/429")
      return HttpTestResponse::text(429, "slow down").header("Retry-After", "2");
    if (r.path == "/400/v2/enqueue")
      return HttpTestResponse::json(400, R"({"status":"invalid event","errors":["bad"]})");
    if (r.path == "/slow") return HttpTestResponse::text(200, "late").after_ms(3000);
    return HttpTestResponse::text(200, "ok");
  });
  int dead_port = free_port();
  std::string u = srv.url("");
  std::string dead = "http://127.0.0.1:" + std::to_string(dead_port);

  SECTION("500 is retryable") {
    Harness h;
    json out = output(h.run(catching("o.notify.webhook { url = '" + u + "/500', json = {} }")));
    CHECK(out.at("ok") == false);
    CHECK(out.at("type") == "notify");
    CHECK(out.at("retryable") == true);
    CHECK(out.at("details").at("status") == 500);
    CHECK(out.at("details").at("driver") == "webhook");
    CHECK(contains(out.at("message"), "answered 500: boom"));
  }
  SECTION("429 with Retry-After: 2 is retryable after 2000 ms") {
    Harness h;
    json out =
        output(h.run(catching("o.notify.slack { webhook_url = '" + u + "/429', text = 'x' }")));
    CHECK(out.at("retryable") == true);
    CHECK(out.at("details").at("status") == 429);
    CHECK(out.at("details").at("retry_after_ms") == 2000);
  }
  SECTION("400 (PagerDuty's invalid event) is not retryable") {
    Harness h;
    json out =
        output(h.run(catching("o.notify.pagerduty { routing_key = 'k', summary = 's', "
                              "severity = 'info', base_url = '" +
                              u + "/400' }")));
    CHECK(out.at("retryable") == false);
    CHECK(out.at("details").at("status") == 400);
    CHECK(out.at("details").at("driver") == "pagerduty");
    CHECK(contains(out.at("message"), "invalid event"));
  }
  SECTION("a timeout is retryable") {
    Harness h;
    json out = output(h.run(
        catching("o.notify.webhook { url = '" + u + "/slow', json = {}, timeout = '200ms' }")));
    CHECK(out.at("retryable") == true);
    CHECK(out.at("details").at("code") == "timeout");
  }
  SECTION("connection refused is retryable") {
    Harness h;
    json out = output(h.run(catching("o.notify.webhook { url = '" + dead + "/x', json = {} }")));
    CHECK(out.at("retryable") == true);
    CHECK(out.at("details").at("code") == "connect");
  }
  SECTION("raise = false returns the failed record") {
    Harness h;
    json out = output(
        h.run(catching("o.notify.webhook { url = '" + u + "/429', json = {}, raise = false }")));
    json rec = out.at("record");
    CHECK(rec.at("ok") == false);
    CHECK(rec.at("status") == 429);
    CHECK(rec.at("error").at("retryable") == true);
    CHECK(rec.at("error").at("retry_after_ms") == 2000);
  }
}

TEST_CASE("o.notify: a 500 retries under the node's policy, a 400 does not", "[notify]") {
  HttpTestServer srv([](const HttpTestRequest& r) {
    return HttpTestResponse::text(r.path == "/500" ? 500 : 400, "no");
  });
  auto pipeline = [&](const std::string& path) {
    return R"(
      local o = require "orch"
      return o.pipeline "retry" {
        o.node("send", function(ctx)
          return o.notify.webhook { url = ctx.input.url .. ")" +
           path + R"(", json = { a = 1 } }
        end, { retry = { max = 3, base = "10ms" } }),
      })";
  };
  Harness h;
  auto s = h.run(pipeline("/500"), input_with_url(srv));
  CHECK(s.status == "failed");
  CHECK(s.error_type == "notify");
  CHECK(query_int(h.db_path, "select count(*) from node_runs where run_id = '" + s.run_id +
                                 "' and node_id = 'send'") == 3);
  CHECK(query_int(h.db_path, "select count(*) from node_runs where run_id = '" + s.run_id +
                                 "' and retryable = 1") == 3);
  auto s2 = h.run(pipeline("/400"), input_with_url(srv));
  CHECK(s2.status == "failed");
  CHECK(query_int(h.db_path, "select count(*) from node_runs where run_id = '" + s2.run_id +
                                 "' and node_id = 'send'") == 1);
  CHECK(query_int(h.db_path,
                  "select retryable from node_runs where run_id = '" + s2.run_id + "'") == 0);
  CHECK(srv.request_count() == 4);
  // The details reach the node.failed event.
  std::string ev = query_str(h.db_path, "select data from events where run_id = '" + s.run_id +
                                            "' and kind = 'node.failed' limit 1");
  json d = parse_json(ev, nullptr);
  CHECK(d.at("details").at("status") == 500);
  CHECK(d.at("details").at("driver") == "webhook");
  CHECK(h.close().empty());
}

TEST_CASE("o.notify: bad options raise non-retryable errors naming the field", "[notify]") {
  Harness h;
  auto check = [&](const std::string& call, const std::string& want) {
    json out = output(h.run(catching(call)));
    INFO(call << " -> " << out.dump());
    CHECK(out.at("ok") == false);
    CHECK(out.at("retryable") == false);
    CHECK(out.at("type") == "notify");
    CHECK(contains(out.value("message", ""), want));
  };
  check("o.notify.slack { text = 'x' }", "o.notify.slack: 'webhook_url' is required");
  check("o.notify.slack { webhook_url = 'http://x/', txt = 'x' }",
        "unknown option 'txt' (known: analysis, blocks, channel,");
  check("o.notify.slack { webhook_url = 'ftp://x/', text = 'x' }", "'webhook_url' must be an http");
  check("o.notify.webhook { json = {} }", "'url' is required");
  check("o.notify.webhook { url = 'http://x/', json = {}, body = 'y' }",
        "'json' and 'body' cannot be used together");
  check("o.notify.webhook { url = 'http://x/', timeout = 'soon' }", "'timeout' must be a duration");
  check("o.notify.webhook { url = 'http://x/', headers = { ['X-A'] = 'a\\r\\nB: c' } }",
        "header 'X-A' contains a control character");
  check("o.notify.pagerduty { summary = 'x', severity = 'info' }", "'routing_key' is required");
  check("o.notify.pagerduty { routing_key = 'k', summary = 'x', severity = 'sev1' }",
        "'severity' must be critical, error, warning or info");
  check("o.notify.pagerduty { routing_key = 'k', action = 'resolve' }", "'dedup_key' is required");
  check("o.notify.pagerduty { routing_key = 'k', action = 'page' }",
        "'action' must be trigger, acknowledge or resolve");
  check("o.notify.email { smtp_url = 'smtp://x', from = 'a@b', subject = 's', text = 't' }",
        "'to' is required");
  check(
      "o.notify.email { smtp_url = 'smtp://x', from = 'nobody', to = 'a@b', subject = 's', "
      "text = 't' }",
      "'from': 'nobody' is not an email address");
  check(
      "o.notify.email { smtp_url = 'http://x', from = 'a@b', to = 'a@b', subject = 's', "
      "text = 't' }",
      "'smtp_url' must be smtp://");
  check(
      "o.notify.email { smtp_url = 'smtp://x', from = 'a@b', to = 'a@b', subject = 's\\nBcc: "
      "x@y', text = 't' }",
      "'subject' contains a line break");
  check("o.notify.file { text = 'x' }", "'path' is required");
  check("o.notify.console { }", "one of 'text', 'title' or 'incident' is required");
  CHECK(h.close().empty());
}

TEST_CASE("o.notify: a webhook URL read with o.secret stays out of the record", "[notify]") {
  HttpTestServer srv;
  std::string url = srv.url("/hook/T0K3N-PATH");
  setenv("ORCHRUN_SECRET_NOTIFY_TEST_URL", url.c_str(), 1);
  Harness h;
  auto s = h.run(R"(
    local o = require "orch"
    return o.pipeline "sec" {
      o.node("send", function(ctx)
        local rec = o.notify.webhook { url = o.secret "NOTIFY_TEST_URL", json = { a = 1 } }
        return { target = rec.target, has_token = rec.target:find("T0K3N", 1, true) ~= nil }
      end),
    })");
  unsetenv("ORCHRUN_SECRET_NOTIFY_TEST_URL");
  json out = output(s);
  CHECK(out.at("has_token") == false);
  CHECK(out.at("target") == srv.url(""));
  REQUIRE(srv.request_count() == 1);
  CHECK(srv.requests()[0].path == "/hook/T0K3N-PATH");
  CHECK(h.close().empty());
}

TEST_CASE("o.notify.console logs through the node's logger; o.notify.file appends JSON lines",
          "[notify]") {
  Harness h;
  std::string path = h.dir.file("notes/deep/alerts.jsonl");
  auto s = h.run(R"(
    local o = require "orch"
    return o.pipeline "local" {
      o.node("send", function(ctx)
        local a = o.notify.console { title = "Disk almost full", text = "/var at 97%",
                                     severity = "warning", fields = { host = "db1" } }
        local b = o.notify.file { path = ctx.input.path, incident = { title = "Disk almost full",
                                  severity = "warning", fingerprint = "fp-1" } }
        local c = o.notify.file { path = ctx.input.path, json = { custom = true } }
        return { a = a, b = b, c = c }
      end),
    })",
                 dump_json(json{{"path", path}}));
  json out = output(s);
  CHECK(out.at("a").at("driver") == "console");
  CHECK(out.at("a").at("ok") == true);
  CHECK(out.at("b").at("driver") == "file");
  CHECK(out.at("b").at("target") == path);
  auto rows = query(h.db_path,
                    "select data from events where run_id = '" + s.run_id + "' and kind = 'log'");
  REQUIRE(rows.size() == 1);
  json ev = parse_json(rows[0][0], nullptr);
  CHECK(ev.at("level") == "warn");
  CHECK(ev.at("message") == "[WARNING] Disk almost full: /var at 97%");
  CHECK(ev.at("fields").at("host") == "db1");
  std::istringstream in(read_file(path));
  std::string l1, l2, l3;
  std::getline(in, l1);
  std::getline(in, l2);
  CHECK(!std::getline(in, l3));
  json j1 = parse_json(l1, nullptr), j2 = parse_json(l2, nullptr);
  CHECK(j1.at("title") == "Disk almost full");
  CHECK(j1.at("severity") == "warning");
  CHECK(j1.at("incident").at("fingerprint") == "fp-1");
  CHECK(j1.at("ts").get<std::string>().size() == 24);
  CHECK(j2 == json{{"custom", true}});
  CHECK(h.close().empty());
}

TEST_CASE("o.notify.email: a MIME message through a local SMTP server", "[notify][smtp]") {
  if (!have_aiosmtpd()) {
    ORCH_SKIP("python3-aiosmtpd is not installed (scripts/setup.sh installs it)");
  }
  TempDir d;
  SmtpTestServer smtp(d.file("mail.jsonl"));
  REQUIRE(can_connect(smtp.port()));
  Harness h;
  auto s = h.run(R"(
    local o = require "orch"
    return o.pipeline "mail" {
      o.node("send", function(ctx)
        local a = o.notify.email { smtp_url = ctx.input.smtp, from = "Orchrun Bot <bot@example.org>",
                                   to = { "oncall@example.org", "Zoë <zoe@example.org>" },
                                   cc = "lead@example.org", bcc = "audit@example.org",
                                   subject = "Disk almost full — db1 ✓", starttls = "off",
                                   text = "Line one\n.leading dot\nLine three", html = "<p>Hi <b>there</b></p>" }
        local b = o.notify.email { smtp_url = ctx.input.smtp, from = "bot@example.org",
                                   to = "oncall@example.org", subject = "plain", text = "naïve text ✓" }
        return { a = a, b = b }
      end),
    })",
                 dump_json(json{{"smtp", smtp.url()}}));
  json out = output(s);
  auto msgs = smtp.messages();
  REQUIRE(msgs.size() == 2);
  json m = msgs[0];
  INFO(m.dump(2));
  CHECK(m.at("mail_from") == "bot@example.org");
  CHECK(m.at("rcpt_tos") ==
        json{"oncall@example.org", "zoe@example.org", "lead@example.org", "audit@example.org"});
  CHECK(m.at("subject") == "Disk almost full — db1 ✓");
  CHECK(contains(m.at("raw"), "Subject: =?UTF-8?B?"));
  CHECK(m.at("from") == "Orchrun Bot <bot@example.org>");
  CHECK(contains(m.at("to"), "zoe@example.org"));
  CHECK(contains(m.at("to"), "Zoë"));
  CHECK(m.at("cc") == "lead@example.org");
  CHECK(!contains(m.at("raw"), "audit@example.org"));  // Bcc: envelope only
  CHECK(!m.at("date").get<std::string>().empty());
  CHECK(m.at("content_type") == "multipart/alternative");
  REQUIRE(m.at("parts").size() == 3);
  CHECK(m.at("parts")[1].at("type") == "text/plain");
  CHECK(m.at("parts")[1].at("text") == "Line one\n.leading dot\nLine three");
  CHECK(m.at("parts")[2].at("type") == "text/html");
  CHECK(m.at("parts")[2].at("text") == "<p>Hi <b>there</b></p>");
  CHECK(m.at("defects").empty());
  json ra = out.at("a");
  CHECK(ra.at("driver") == "email");
  CHECK(ra.at("ok") == true);
  CHECK(ra.at("status") == 250);
  CHECK(ra.at("id") == m.at("message_id"));
  CHECK(ra.at("server") == smtp.url());
  json m2 = msgs[1];
  CHECK(m2.at("content_type") == "text/plain");
  CHECK(m2.at("parts")[0].at("cte") == "base64");
  CHECK(m2.at("parts")[0].at("text") == "naïve text ✓");
  CHECK(h.close().empty());
}

TEST_CASE("o.notify.email: a rejected recipient is final, a server that is down is retryable",
          "[notify][smtp]") {
  if (!have_aiosmtpd()) {
    ORCH_SKIP("python3-aiosmtpd is not installed (scripts/setup.sh installs it)");
  }
  TempDir d;
  SmtpTestServer smtp(d.file("mail.jsonl"), /*reject_rcpt=*/true);
  REQUIRE(can_connect(smtp.port()));
  Harness h;
  std::string call = "o.notify.email { smtp_url = '" + smtp.url() +
                     "', from = 'bot@example.org', to = 'ghost@example.org', subject = 's', "
                     "text = 't', starttls = 'off' }";
  json out = output(h.run(catching(call)));
  INFO(out.dump());
  CHECK(out.at("ok") == false);
  CHECK(out.at("retryable") == false);
  CHECK(out.at("details").at("status") == 550);
  CHECK(out.at("details").at("driver") == "email");

  std::string down =
      "o.notify.email { smtp_url = 'smtp://127.0.0.1:" + std::to_string(free_port()) +
      "', from = 'bot@example.org', to = 'a@example.org', subject = 's', "
      "text = 't' }";
  json out2 = output(h.run(catching(down)));
  INFO(out2.dump());
  CHECK(out2.at("ok") == false);
  CHECK(out2.at("retryable") == true);
  CHECK(out2.at("details").at("code") == "connect");
  CHECK(h.close().empty());
}

TEST_CASE("a 429 with Retry-After delays the node's next attempt at least that long", "[notify]") {
  HttpTestServer srv([](const HttpTestRequest& r) {
    static int calls = 0;
    if (++calls == 1) return HttpTestResponse::text(429, "slow down").header("Retry-After", "1");
    return HttpTestResponse::text(200, "ok");
  });
  Harness h;
  RunSummary s = h.run(R"(local o = require "orch"
return o.pipeline "p" {
  o.node("send", function()
    return o.notify.slack { webhook_url = ")" +
                       srv.url("/hook") + R"(", text = "x" }
  end, { retry = { max = 2, base = "10ms", jitter = false } }),
})");
  CHECK(s.status == "succeeded");
  auto rows = query(h.db_path,
                    "select attempt, status, started_at, finished_at from node_runs where "
                    "node_id='send' order by attempt");
  REQUIRE(rows.size() == 2);
  CHECK(rows[0][1] == "failed");
  CHECK(rows[1][1] == "succeeded");
  // The policy alone would wait 10 ms; the server asked for 1 s. (Row timestamps are wall
  // clock; libuv times its timers from the loop's cached clock, which can be a few ms behind.)
  CHECK(std::stoll(rows[1][2]) - std::stoll(rows[0][3]) >= 950);
  CHECK(query_int(h.db_path,
                  "select json_extract(data, '$.retry_after_ms') from events where "
                  "kind='node.failed' and node_id='send'") == 1000);
  CHECK(query_int(h.db_path,
                  "select json_extract(data, '$.retry_in_ms') from events where "
                  "kind='node.failed' and node_id='send'") == 1000);
  CHECK(h.close().empty());
}
