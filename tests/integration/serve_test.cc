// orchrun serve end to end: the real binary as a child process on 127.0.0.1:0 with a temporary
// database, driven by real HTTP clients (tests/serve_util.h), checked through the API and in
// the store. Plus the cron schedules in-process with an injected clock ([serve][cron]).
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <map>
#include <regex>
#include <set>
#include <thread>

#include "base/ids.h"
#include "base/json_util.h"
#include "drivers/loop.h"
#include "server/server.h"
#include "store/store.h"
#include "serve_util.h"
#include "test_util.h"

using namespace orch;
using namespace orch::test;

namespace {

bool has(const std::string& s, const std::string& sub) {
  return s.find(sub) != std::string::npos;
}

// A directory of pipelines inside `tmp`, with the given files.
std::string pipeline_dir(const TempDir& tmp,
                         const std::vector<std::pair<std::string, std::string>>& files) {
  std::string dir = tmp.file("pipelines");
  mkdir(dir.c_str(), 0755);
  for (auto& [name, src] : files) write_file(dir + "/" + name, src);
  return dir;
}

// Writes `content` beside `path` and renames it into place (what careful editors do).
void write_atomic(const std::string& path, const std::string& content) {
  std::string dir = path.substr(0, path.rfind('/'));
  std::string tmp = dir + "/.tmp-" + std::to_string(getpid()) + "-" + path.substr(dir.size() + 1);
  write_file(tmp, content);
  REQUIRE(rename(tmp.c_str(), path.c_str()) == 0);
}

int64_t count(const std::string& db, const std::string& sql) {
  return query_int(db, sql);
}

// Reply details for failure messages.
std::string show(const HttpReply& r) {
  return "HTTP " + std::to_string(r.status) + " " + r.body.substr(0, 600) +
         (r.error.empty() ? "" : " (" + r.error + ")");
}

const std::string kSecret = "It's a Secret to Everybody";

const char* kTrivial = R"(local o = require "orch"
return o.pipeline "x" {
  o.node("a", function(ctx) return { i = ctx.input.i } end),
}
)";

const char* kGate = R"(local o = require "orch"
return o.pipeline "gate" {
  o.node("plan", function() return { tasks = 3 } end),
  o.approve("deploy", { message = "Ship it?", approvers = { "alice", "bob" } }),
  o.node("ship", function(ctx) return { by = ctx.outputs.deploy.by, note = ctx.outputs.deploy.comment } end),
}
)";

// Sleeps `input.sleep` seconds (default 30) on its first attempt only: a cancelled run
// retried succeeds at once.
const char* kSleepy = R"(local o = require "orch"
return o.pipeline "sleepy" {
  o.node("a", function(ctx)
    if ctx.attempt == 1 then o.sleep(ctx.input.sleep or 30) end
    return { attempt = ctx.attempt }
  end),
  o.node("b", function() return { done = true } end),
}
)";

const char* kFailing = R"(local o = require "orch"
return o.pipeline "failing" {
  o.node("boom", function() o.fail("always fails") end),
}
)";

}  // namespace

// --- 1. webhooks ------------------------------------------------------------------------------

TEST_CASE("serve: webhooks check signatures, deduplicate deliveries and carry trace context",
          "[serve]") {
  TempDir tmp;
  std::string dir = pipeline_dir(tmp, {{"gh.lua", R"(local o = require "orch"
return o.pipeline "gh" {
  triggers = {
    o.webhook { path = "/hooks/gh", secret = "GH", signature_header = "X-Hub-Signature-256",
                dedup_header = "X-Delivery" },
  },
  o.node("echo", function(ctx) return { input = ctx.input, trace = ctx.trace_id } end),
}
)"},
                                       {"env.lua", R"(local o = require "orch"
return o.pipeline "env" {
  triggers = {
    o.webhook { path = "/hooks/env", secret = "GH", input = "envelope",
                dedup_header = "X-GitHub-Delivery" },
  },
  o.node("echo", function(ctx) return ctx.input end),
}
)"}});
  std::string db = tmp.file("s.db");
  ServeProcess srv(dir, db, {}, {"ORCHRUN_SECRET_GH=" + kSecret});
  auto runs = [&] { return count(db, "select count(*) from runs"); };
  auto hook = [&](const std::string& path, const std::string& body, HeaderList h) {
    return srv.request("POST", path, body, h);
  };
  auto sig = [](const std::string& body) { return "sha256=" + hmac_sha256_hex(kSecret, body); };

  // A good signature, with the sha256= prefix GitHub sends.
  std::string body = R"({"action":"opened","number":42,"repo":{"name":"orch"}})";
  auto r = hook("/hooks/gh", body, {{"X-Hub-Signature-256", sig(body)}});
  INFO(show(r));
  REQUIRE(r.status == 202);
  json j = r.json_body();
  REQUIRE(j.contains("run_id"));
  std::string id = j["run_id"];
  REQUIRE(j.contains("trace_id"));
  CHECK(j["trace_id"].get<std::string>().size() == 32);
  CHECK(j["pipeline"] == "gh");
  json run = srv.wait_run(id, "succeeded,failed");
  CHECK(run["status"] == "succeeded");
  CHECK(run["source"] == "webhook");
  CHECK(run["input"] == json::parse(body));
  CHECK(run["trace_id"] == j["trace_id"]);
  CHECK(run["output"]["input"] == json::parse(body));
  CHECK(query_str(db, "select input from runs where id=" + sql_literal(id)) ==
        dump_json(json::parse(body)));

  // A bare hex signature, in upper case too.
  std::string body2 = R"({"n":2})";
  r = hook("/hooks/gh", body2, {{"X-Hub-Signature-256", hmac_sha256_hex(kSecret, body2)}});
  CHECK(r.status == 202);
  std::string upper = hmac_sha256_hex(kSecret, body2);
  for (auto& c : upper) c = static_cast<char>(toupper(static_cast<unsigned char>(c)));
  r = hook("/hooks/gh", body2, {{"X-Hub-Signature-256", upper}});
  CHECK(r.status == 202);
  CHECK(runs() == 3);

  // Bad signatures: another body's, another key's, a truncated one, garbage. No run.
  int64_t before = runs();
  for (const std::string& bad :
       {sig(body2), "sha256=" + hmac_sha256_hex("wrong key", body), sig(body).substr(0, 40),
        std::string("sha256="), std::string("definitely not hex"),
        "sha1=" + hmac_sha256_hex(kSecret, body)}) {
    r = hook("/hooks/gh", body, {{"X-Hub-Signature-256", bad}});
    INFO("signature: " << bad << " -> " << show(r));
    CHECK(r.status == 401);
    CHECK(r.error_code() == "bad_signature");
  }
  r = hook("/hooks/gh", body, {});
  CHECK(r.status == 401);
  CHECK(r.error_code() == "signature_missing");
  // The header is matched by name whatever its case.
  r = hook("/hooks/gh", body, {{"x-hub-signature-256", "sha256=00"}});
  CHECK(r.error_code() == "bad_signature");
  CHECK(runs() == before);

  // An unknown path: a JSON 404.
  r = hook("/hooks/nope", body, {{"X-Hub-Signature-256", sig(body)}});
  CHECK(r.status == 404);
  CHECK(r.error_code() == "not_found");
  CHECK(has(r.header("content-type"), "application/json"));

  // A signed body that is not JSON: 400, no run.
  std::string notjson = "{\"action\": opened";
  r = hook("/hooks/gh", notjson, {{"X-Hub-Signature-256", sig(notjson)}});
  CHECK(r.status == 400);
  CHECK(r.error_code() == "invalid_json");
  CHECK(runs() == before);

  // The same delivery twice: one run; the second answer names it.
  std::string body3 = R"({"delivery":"abc","n":3})";
  r = hook("/hooks/gh", body3, {{"X-Hub-Signature-256", sig(body3)}, {"X-Delivery", "d-1"}});
  INFO(show(r));
  REQUIRE(r.status == 202);
  std::string first = r.json_body()["run_id"];
  CHECK(r.json_body()["delivery_id"] == "d-1");
  r = hook("/hooks/gh", body3, {{"X-Hub-Signature-256", sig(body3)}, {"X-Delivery", "d-1"}});
  INFO(show(r));
  CHECK(r.status == 200);
  CHECK(r.json_body()["duplicate"] == true);
  CHECK(r.json_body()["run_id"] == first);
  CHECK(runs() == before + 1);
  CHECK(count(db, "select count(*) from runs where input=" + sql_literal(body3)) == 1);
  CHECK(count(db, "select count(*) from webhook_deliveries") == 1);
  CHECK(eventually([&] { return poll_int(db, "select duplicates from webhook_deliveries") == 1; },
                   3000));
  CHECK(query_str(db,
                  "select run_id || ' ' || duplicates from webhook_deliveries where "
                  "delivery_id='d-1'") == first + " 1");
  // A duplicate with a bad signature is refused before it is looked up.
  r = hook("/hooks/gh", body3, {{"X-Hub-Signature-256", sig(body)}, {"X-Delivery", "d-1"}});
  CHECK(r.status == 401);
  CHECK(query_int(db, "select duplicates from webhook_deliveries") == 1);
  // Another delivery id with the same body is another run.
  r = hook("/hooks/gh", body3, {{"X-Hub-Signature-256", sig(body3)}, {"X-Delivery", "d-2"}});
  CHECK(r.status == 202);
  CHECK(r.json_body()["run_id"] != first);
  CHECK(srv.wait_run(first, "succeeded,failed")["status"] == "succeeded");

  // W3C trace context: the caller's trace id becomes the run's.
  std::string trace = "4bf92f3577b34da6a3ce929d0e0e4736";
  std::string body4 = R"({"n":4})";
  r = hook("/hooks/gh", body4,
           {{"X-Hub-Signature-256", sig(body4)},
            {"traceparent", "00-" + trace + "-00f067aa0ba902b7-01"}});
  INFO(show(r));
  REQUIRE(r.status == 202);
  CHECK(r.json_body()["trace_id"] == trace);
  std::string traced = r.json_body()["run_id"];
  run = srv.wait_run(traced, "succeeded,failed");
  CHECK(run["trace_id"] == trace);
  CHECK(run["output"]["trace"] == trace);
  CHECK(count(db, "select count(*) from events where run_id=" + sql_literal(traced) +
                      " and trace_id<>" + sql_literal(trace)) == 0);
  // An invalid traceparent (all-zero trace id) is ignored: a fresh trace id.
  r = hook("/hooks/gh", body4,
           {{"X-Hub-Signature-256", sig(body4)},
            {"traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"}});
  REQUIRE(r.status == 202);
  CHECK(r.json_body()["trace_id"].get<std::string>().size() == 32);
  CHECK(r.json_body()["trace_id"] != "00000000000000000000000000000000");

  // A body that is not an object arrives as {payload = ...}.
  std::string arr = "[1,2,3]";
  r = hook("/hooks/gh", arr, {{"X-Hub-Signature-256", sig(arr)}});
  REQUIRE(r.status == 202);
  run = srv.wait_run(r.json_body()["run_id"], "succeeded,failed");
  CHECK(run["input"] == json::parse(R"({"payload":[1,2,3]})"));

  // Envelope mode: the body, the headers (without the signature), the path, the query and
  // the delivery id.
  std::string body5 = R"({"ref":"refs/heads/main"})";
  r = hook(
      "/hooks/env?src=ci&x=1", body5,
      {{"X-Hub-Signature-256", sig(body5)}, {"X-GitHub-Delivery", "env-1"}, {"X-Custom", "yes"}});
  INFO(show(r));
  REQUIRE(r.status == 202);
  run = srv.wait_run(r.json_body()["run_id"], "succeeded,failed");
  CHECK(run["status"] == "succeeded");
  json in = run["input"];
  INFO(in.dump());
  CHECK(in["body"] == json::parse(body5));
  CHECK(in["path"] == "/hooks/env");
  CHECK(in["query"] == "src=ci&x=1");
  CHECK(in["delivery_id"] == "env-1");
  CHECK(in["headers"]["x-custom"] == "yes");
  CHECK(in["headers"]["x-github-delivery"] == "env-1");
  CHECK(!in["headers"].contains("x-hub-signature-256"));
  CHECK(run["output"] == in);
  CHECK(srv.stop() == 0);

  // The secret from a secrets file (mode 0600) instead of the environment.
  std::string secrets = tmp.file("secrets");
  write_file(secrets, "# webhook secrets\nGH=" + kSecret + "\n");
  chmod(secrets.c_str(), 0600);
  ServeProcess from_file(dir, tmp.file("f.db"), {"--secrets", secrets});
  r = from_file.request("POST", "/hooks/gh", body, {{"X-Hub-Signature-256", sig(body)}});
  INFO(show(r));
  CHECK(r.status == 202);
  CHECK(from_file.stop() == 0);
  // A secret set nowhere: deliveries are refused (not accepted unsigned), nothing starts.
  ServeProcess no_secret(dir, tmp.file("n.db"));
  r = no_secret.request("POST", "/hooks/gh", body, {{"X-Hub-Signature-256", sig(body)}});
  CHECK(r.status == 500);
  CHECK(r.error_code() == "secret_missing");
  CHECK(count(tmp.file("n.db"), "select count(*) from runs") == 0);
  CHECK(has(no_secret.log(), "secret GH is not set"));
  CHECK(no_secret.stop() == 0);
}

// --- 2. listing runs --------------------------------------------------------------------------

TEST_CASE("serve: GET /api/runs pages with a cursor while runs are being added, and filters",
          "[serve]") {
  TempDir tmp;
  std::string dir = pipeline_dir(tmp, {{"x.lua", kTrivial}});
  std::string db = tmp.file("s.db");
  ServeProcess srv(dir, db);
  auto start = [&](int i) {
    auto r = srv.post("/api/pipelines/x/runs", R"({"input":{"i":)" + std::to_string(i) + "}}");
    INFO(show(r));
    REQUIRE(r.status == 202);
    return r.json_body()["run_id"].get<std::string>();
  };
  std::set<std::string> existing;
  for (int i = 0; i < 30; i++) existing.insert(start(i));
  REQUIRE(existing.size() == 30);

  // Page through, 7 at a time, adding two runs between pages.
  std::vector<json> seen;
  std::string cursor;
  int pages = 0, added = 0;
  for (;;) {
    std::string target = "/api/runs?limit=7";
    if (!cursor.empty()) target += "&cursor=" + url_encode(cursor);
    auto r = srv.get(target);
    INFO(target << " -> " << show(r));
    REQUIRE(r.status == 200);
    json j = r.json_body();
    REQUIRE(j["runs"].is_array());
    CHECK(j["runs"].size() <= 7);
    for (auto& x : j["runs"]) seen.push_back(x);
    pages++;
    start(1000 + added++);
    start(1000 + added++);
    if (j["next_cursor"].is_null()) break;
    cursor = j["next_cursor"];
    REQUIRE(pages < 20);
  }
  CHECK(pages == 5);
  std::set<std::string> ids;
  for (auto& x : seen) ids.insert(x["id"].get<std::string>());
  CHECK(ids.size() == seen.size());  // no duplicates
  CHECK(ids == existing);            // all that existed, and none of those added meanwhile
  // Newest first: (created_at, id) strictly decreasing, as in the store.
  for (size_t i = 1; i < seen.size(); i++) {
    auto a = std::make_pair(seen[i - 1]["created_at"].get<std::string>(),
                            seen[i - 1]["id"].get<std::string>());
    auto b =
        std::make_pair(seen[i]["created_at"].get<std::string>(), seen[i]["id"].get<std::string>());
    CHECK(a > b);
  }
  std::string in;
  for (auto& id : existing) in += (in.empty() ? "" : ",") + sql_literal(id);
  std::vector<std::string> store_order;
  for (auto& row :
       query(db, "select id from runs where id in (" + in + ") order by created_at desc, id desc"))
    store_order.push_back(row[0]);
  std::vector<std::string> api_order;
  for (auto& x : seen) api_order.push_back(x["id"]);
  CHECK(api_order == store_order);

  // Every run, in one page.
  REQUIRE(eventually(
      [&] { return count(db, "select count(*) from runs where status<>'succeeded'") == 0; }));
  auto all = srv.get("/api/runs?limit=1000").json_body();
  REQUIRE(all["runs"].size() == 40);
  CHECK(all["next_cursor"].is_null());
  CHECK(srv.get("/api/runs").json_body()["runs"].size() == 40);  // default limit 50

  // Bad parameters.
  auto bad = [&](const std::string& target, const std::string& code) {
    auto r = srv.get(target);
    INFO(target << " -> " << show(r));
    CHECK(r.status == 400);
    CHECK(r.error_code() == code);
  };
  bad("/api/runs?cursor=not-a-cursor!", "bad_cursor");
  bad("/api/runs?cursor=Zm9v", "bad_cursor");  // "foo"
  bad("/api/runs?cursor=", "bad_cursor");
  // Well-formed base64 of a created_at that does not fit in 64 bits.
  bad("/api/runs?cursor=OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OkFCQw", "bad_cursor");
  bad("/api/runs?limit=0", "bad_parameter");
  bad("/api/runs?limit=5000", "bad_parameter");
  bad("/api/runs?limit=-3", "bad_parameter");
  bad("/api/runs?limit=abc", "bad_parameter");
  bad("/api/runs?status=bogus", "bad_parameter");
  bad("/api/runs?since=yesterday", "bad_parameter");
  bad("/api/runs?since=2026-11-22T10:00:00", "bad_parameter");  // no zone
  bad("/api/runs?until=", "bad_parameter");
  CHECK(srv.get("/healthz").status == 200);
  CHECK(srv.get("/api/runs?limit=1000").status == 200);

  // Filters.
  auto n = [&](const std::string& params) {
    auto r = srv.get("/api/runs?limit=1000&" + params);
    INFO(params << " -> " << show(r));
    REQUIRE(r.status == 200);
    return static_cast<int64_t>(r.json_body()["runs"].size());
  };
  CHECK(n("status=succeeded") == 40);
  CHECK(n("status=failed") == 0);
  CHECK(n("pipeline=x") == 40);
  CHECK(n("pipeline=y") == 0);
  CHECK(n("source=api") == 40);
  CHECK(n("source=webhook") == 0);
  CHECK(n("since=1h") == 40);
  CHECK(n("until=1h") == 0);
  CHECK(n("since=2000-01-01T00:00:00Z") == 40);
  CHECK(n("until=2000-01-01T00:00:00Z") == 0);
  // At the created_at of the 11th newest run: since includes it, until excludes it.
  std::string pivot_id = all["runs"][10]["id"];
  int64_t pivot = count(db, "select created_at from runs where id=" + sql_literal(pivot_id));
  int64_t newer = count(db, "select count(*) from runs where created_at>=" + std::to_string(pivot));
  std::string iso = all["runs"][10]["created_at"];
  CHECK(n("since=" + url_encode(iso)) == newer);
  CHECK(n("until=" + url_encode(iso)) == 40 - newer);
  CHECK(n("since=" + std::to_string(pivot)) == newer);  // unix ms
  // The same instant with a UTC offset.
  std::string plus2 = iso8601_ms(pivot + 2 * 3600 * 1000);
  plus2 = plus2.substr(0, plus2.size() - 1) + "+02:00";
  CHECK(n("since=" + url_encode(plus2)) == newer);
  CHECK(n("since=1h&until=" + url_encode(iso) + "&status=succeeded&pipeline=x") == 40 - newer);

  // An idempotency key: the second start answers the first run.
  auto k1 = srv.post("/api/pipelines/x/runs", R"({"input":{},"idempotency_key":"nightly-1"})");
  REQUIRE(k1.status == 202);
  auto k2 = srv.post("/api/pipelines/x/runs", R"({"input":{},"idempotency_key":"nightly-1"})");
  CHECK(k2.status == 200);
  CHECK(k2.json_body()["existing"] == true);
  CHECK(k2.json_body()["run_id"] == k1.json_body()["run_id"]);
  CHECK(count(db, "select count(*) from runs where idempotency_key='nightly-1'") == 1);
  // The Idempotency-Key header works too, and a traceparent sets the trace id.
  std::string trace = "0af7651916cd43dd8448eb211c80319c";
  auto h1 = srv.request(
      "POST", "/api/pipelines/x/runs", "{}",
      {{"Idempotency-Key", "nightly-2"}, {"traceparent", "00-" + trace + "-b7ad6b7169203331-01"}});
  REQUIRE(h1.status == 202);
  CHECK(h1.json_body()["trace_id"] == trace);
  auto h2 = srv.request("POST", "/api/pipelines/x/runs", "{}", {{"Idempotency-Key", "nightly-2"}});
  CHECK(h2.status == 200);
  CHECK(h2.json_body()["run_id"] == h1.json_body()["run_id"]);
  CHECK(srv.stop() == 0);
}

// --- 3. CSV -----------------------------------------------------------------------------------

TEST_CASE("serve: GET /api/runs.csv is RFC 4180 CSV", "[serve]") {
  TempDir tmp;
  std::string dir = pipeline_dir(tmp, {{"x.lua", kTrivial}, {"f.lua", R"(local o = require "orch"
return o.pipeline "f" {
  o.node("boom", function(ctx) o.fail(ctx.input.msg) end),
}
)"}});
  std::string db = tmp.file("s.db");
  ServeProcess srv(dir, db);
  std::vector<std::string> ids;
  for (int i = 0; i < 3; i++) {
    auto r = srv.post("/api/pipelines/x/runs", "{}");
    REQUIRE(r.status == 202);
    ids.push_back(r.json_body()["run_id"]);
  }
  const std::string comma = R"(disk full, "sda1" at 99%)";
  const std::string lines = "first line\nsecond, \"line\"";
  for (const std::string& msg : {comma, lines}) {
    auto r = srv.post("/api/pipelines/f/runs", dump_json(json{{"input", {{"msg", msg}}}}));
    REQUIRE(r.status == 202);
    ids.push_back(r.json_body()["run_id"]);
  }
  for (auto& id : ids) srv.wait_run(id, "succeeded,failed");

  auto r = srv.get("/api/runs.csv");
  INFO(show(r));
  REQUIRE(r.status == 200);
  CHECK(r.header("content-type").rfind("text/csv", 0) == 0);
  CHECK(has(r.header("content-disposition"), "runs.csv"));
  const std::string header =
      "id,pipeline,version,status,source,created_at,started_at,finished_at,duration_ms,attempts,"
      "trace_id,error_type,error_node,error_message\r\n";
  CHECK(r.body.rfind(header, 0) == 0);
  CHECK(r.body.size() >= 2);
  CHECK(r.body.substr(r.body.size() - 2) == "\r\n");
  // The quote is doubled and the field quoted.
  CHECK(has(r.body, R"("disk full, ""sda1"" at 99%")"));
  CHECK(has(r.body, "\"first line\nsecond, \"\"line\"\"\""));
  auto rows = parse_csv(r.body);
  REQUIRE(rows.size() == 6);
  CHECK(rows[0].size() == 14);
  CHECK(static_cast<int64_t>(rows.size() - 1) == count(db, "select count(*) from runs"));
  std::map<std::string, std::vector<std::string>> by_id;
  for (size_t i = 1; i < rows.size(); i++) {
    INFO("row " << i);
    CHECK(rows[i].size() == 14);
    if (rows[i].size() == 14) by_id[rows[i][0]] = rows[i];
  }
  for (auto& row : query(db,
                         "select id, pipeline, version, status, source, attempts, trace_id, "
                         "error_type, error_node, error_message from runs")) {
    INFO("run " << row[0]);
    REQUIRE(by_id.count(row[0]) == 1);
    auto& c = by_id[row[0]];
    CHECK(c[1] == row[1]);
    CHECK(c[2] == row[2]);
    CHECK(c[3] == row[3]);
    CHECK(c[4] == row[4]);
    CHECK(c[9] == row[5]);
    CHECK(c[10] == row[6]);
    CHECK(c[11] == row[7]);
    CHECK(c[12] == row[8]);
    CHECK(c[13] == row[9]);
  }
  CHECK(by_id[ids[3]][13] == comma);
  CHECK(by_id[ids[4]][13] == lines);

  // Filters apply; limits too.
  auto failed = srv.get("/api/runs.csv?status=failed");
  REQUIRE(failed.status == 200);
  CHECK(parse_csv(failed.body).size() == 3);
  CHECK(srv.get("/api/runs.csv?limit=20000").status == 400);
  auto two = srv.get("/api/runs.csv?limit=2");
  CHECK(parse_csv(two.body).size() == 3);
  CHECK(two.header("x-truncated") == "true");
  CHECK(!two.header("x-next-cursor").empty());
  CHECK(srv.stop() == 0);
}

// --- 4. authentication ------------------------------------------------------------------------

TEST_CASE("serve: with a token, every state-changing call needs it; without one, only loopback",
          "[serve]") {
  TempDir tmp;
  std::string dir = pipeline_dir(tmp, {{"gate.lua", kGate},
                                       {"sleepy.lua", kSleepy},
                                       {"failing.lua", kFailing},
                                       {"open.lua", R"(local o = require "orch"
return o.pipeline "open" {
  triggers = { o.webhook { path = "/hooks/open" } },
  o.node("n", function() return {} end),
}
)"}});
  std::string db = tmp.file("s.db");
  const std::string token = "tok-0123456789abcdef-XYZ";
  ServeProcess srv(dir, db, {}, {"ORCHRUN_TOKEN=" + token});
  srv.set_token(token);
  auto started = [&](const std::string& pipeline, const std::string& body) {
    auto r = srv.post("/api/pipelines/" + pipeline + "/runs", body);
    INFO(show(r));
    REQUIRE(r.status == 202);
    return r.json_body()["run_id"].get<std::string>();
  };
  std::string gate = started("gate", "{}"), sleepy = started("sleepy", "{}"),
              failing = started("failing", "{}");
  CHECK(srv.wait_run(gate, "awaiting_approval")["status"] == "awaiting_approval");
  CHECK(srv.wait_run(failing, "failed")["status"] == "failed");
  REQUIRE(eventually([&] {
    return count(db, "select count(*) from node_runs where run_id=" + sql_literal(sleepy) +
                         " and status='running'") == 1;
  }));

  auto snapshot = [&] {
    std::vector<std::vector<std::string>> s;
    for (const char* sql :
         {"select id, status, attempts, coalesce(cancel_requested_at, '') from runs order by id",
          "select run_id, node_id, status, coalesce(decided_by, '') from approvals order by run_id",
          "select count(*) from events", "select count(*) from node_runs",
          "select count(*) from definitions"})
      for (auto& row : query(db, sql)) s.push_back(row);
    return s;
  };
  auto before = snapshot();
  struct Route {
    std::string target, body;
  };
  std::vector<Route> routes = {
      {"/api/pipelines/gate/runs", "{}"},
      {"/api/pipelines/gate/validate", kGate},
      {"/api/runs/" + sleepy + "/cancel", R"({"reason":"nope"})"},
      {"/api/runs/" + failing + "/retry", ""},
      {"/api/runs/" + gate + "/approvals/deploy", R"({"decision":"approve","approver":"alice"})"},
  };
  std::vector<HeaderList> wrong = {
      {},
      {{"Authorization", "Bearer wrong-token-0123456789"}},
      {{"Authorization", "Bearer " + token + "x"}},
      {{"Authorization", "Bearer " + token.substr(0, token.size() - 1)}},
      {{"Authorization", "Bearer"}},
      {{"Authorization", "Bearer "}},
      {{"Authorization", token}},
      {{"Authorization", "Basic " + token}},
      {{"X-Api-Token", token}},
  };
  for (auto& rt : routes) {
    for (auto& h : wrong) {
      auto r = srv.request("POST", rt.target, rt.body, h);
      INFO("POST " << rt.target << " with " << (h.empty() ? "no header" : h[0].second) << " -> "
                   << show(r));
      CHECK(r.status == 401);
      CHECK(r.error_code() == "unauthorized");
      CHECK(!r.header("www-authenticate").empty());
    }
  }
  CHECK(snapshot() == before);

  // GETs from loopback need no token.
  for (const std::string& t :
       {std::string("/healthz"), std::string("/metrics"), std::string("/api/pipelines"),
        std::string("/api/pipelines/gate"), std::string("/api/runs"), std::string("/api/runs.csv"),
        "/api/runs/" + gate}) {
    auto r = srv.get(t);
    INFO(t << " -> " << show(r));
    CHECK(r.status == 200);
  }
  {
    SseReader sse(srv.port(), "/api/events?run=" + gate);
    CHECK(sse.status() == 200);
  }

  // With the token, each works.
  HeaderList auth = {{"Authorization", "Bearer " + token}};
  auto r = srv.request("POST", "/api/pipelines/gate/validate", kGate, auth);
  INFO(show(r));
  CHECK(r.status == 200);
  r = srv.request("POST", "/api/pipelines/x/runs", "{}", auth);  // (no such pipeline)
  CHECK(r.status == 404);
  r = srv.request("POST", "/api/pipelines/gate/runs", "{}", {{"Authorization", "bearer " + token}});
  CHECK(r.status == 202);  // the scheme is case-insensitive
  r = srv.request("POST", "/api/runs/" + sleepy + "/cancel", R"({"reason":"maintenance"})", auth);
  INFO(show(r));
  CHECK(r.status == 200);
  r = srv.request("POST", "/api/runs/" + failing + "/retry", "", auth);
  INFO(show(r));
  CHECK(r.status == 202);
  r = srv.request("POST", "/api/runs/" + gate + "/approvals/deploy",
                  R"({"decision":"approve","approver":"alice"})", auth);
  INFO(show(r));
  CHECK(r.status == 200);
  CHECK(srv.wait_run(gate, "succeeded,failed")["status"] == "succeeded");
  CHECK(srv.wait_run(sleepy, "cancelled")["status"] == "cancelled");
  CHECK(srv.wait_run(failing, "failed")["attempts"] == 2);
  // A webhook without a secret is for loopback: there it needs no token.
  CHECK(srv.request("POST", "/hooks/open", "{}").status == 202);
  CHECK(srv.stop() == 0);

  // Beyond loopback without a token: refused, exit 2, with a message.
  auto serve_exit = [&](const std::vector<std::string>& args, const std::vector<std::string>& env) {
    std::vector<std::string> argv = {orchrun_bin(), "serve", dir, "--db", tmp.file("other.db")};
    argv.insert(argv.end(), args.begin(), args.end());
    return run_cmd(argv, env, "", 15);
  };
  auto open = serve_exit({"--listen", "0.0.0.0:0"}, {"ORCHRUN_TOKEN="});
  CHECK(open.exit_code == 2);
  CHECK(has(open.err, "refusing to listen on 0.0.0.0 without a token"));
  auto open6 = serve_exit({"--listen", "[::]:0"}, {"ORCHRUN_TOKEN="});
  CHECK(open6.exit_code == 2);
  CHECK(has(open6.err, "without a token"));
  auto short_token = serve_exit({"--listen", "127.0.0.1:0"}, {"ORCHRUN_TOKEN=short-token"});
  CHECK(short_token.exit_code == 2);
  CHECK(has(short_token.err, "at least 16"));
  std::string tf = tmp.file("token");
  write_file(tf, token + "\n");
  chmod(tf.c_str(), 0644);
  auto readable = serve_exit({"--listen", "127.0.0.1:0", "--token-file", tf}, {"ORCHRUN_TOKEN="});
  CHECK(readable.exit_code == 2);
  CHECK(has(readable.err, "chmod 600"));

  // Other bad starts: exit 2 with a message, nothing listening.
  {
    ServeProcess busy(dir, tmp.file("busy.db"));
    auto in_use =
        serve_exit({"--listen", "127.0.0.1:" + std::to_string(busy.port())}, {"ORCHRUN_TOKEN="});
    CHECK(in_use.exit_code == 2);
    CHECK(has(in_use.err, "orchrun: serve:"));
    CHECK(busy.get("/healthz").status == 200);
  }
  auto no_dir = run_cmd({orchrun_bin(), "serve", tmp.file("nope"), "--listen", "127.0.0.1:0",
                         "--db", tmp.file("x.db")},
                        {}, "", 15);
  CHECK(no_dir.exit_code == 2);
  CHECK(has(no_dir.err, "is not a directory of pipelines"));
  for (auto& bad : std::vector<std::vector<std::string>>{{"--listen", "127.0.0.1:99999"},
                                                         {"--listen", "127.0.0.1"},
                                                         {"--max-body", "lots"},
                                                         {"--max-body", "0"},
                                                         {"--grace", "soon"}}) {
    auto b = serve_exit(bad, {"ORCHRUN_TOKEN="});
    INFO(bad[0] << " " << bad[1] << ": " << b.err);
    CHECK(b.exit_code == 2);
    CHECK(has(b.err, bad[0].substr(2)));
  }

  // Beyond loopback with a token (from a 0600 file): even GETs need it.
  chmod(tf.c_str(), 0600);
  ServeProcess wide(dir, tmp.file("wide.db"), {"--token-file", tf}, {}, "0.0.0.0:0");
  CHECK(wide.get("/api/runs").status == 401);
  CHECK(wide.get("/metrics").status == 401);
  CHECK(wide.request("GET", "/api/runs", "", auth).status == 200);
  CHECK(wide.request("GET", "/metrics", "", auth).status == 200);
  CHECK(wide.get("/healthz").status == 200);  // for load balancers
  // Beyond loopback, a webhook without a secret needs the token.
  auto unsigned_hook = wide.request("POST", "/hooks/open", "{}");
  CHECK(unsigned_hook.status == 401);
  CHECK(unsigned_hook.error_code() == "unauthorized");
  CHECK(wide.request("POST", "/hooks/open", "{}", auth).status == 202);
  CHECK(wide.stop() == 0);
}

// --- 5. server-sent events --------------------------------------------------------------------

TEST_CASE("serve: /api/events streams a run's events; Last-Event-ID resumes; orchrun logs",
          "[serve]") {
  TempDir tmp;
  std::string dir = pipeline_dir(tmp, {{"gate.lua", kGate}, {"sleepy.lua", kSleepy}});
  std::string db = tmp.file("s.db");
  ServeProcess srv(dir, db);
  auto r = srv.post("/api/pipelines/gate/runs", "{}");
  REQUIRE(r.status == 202);
  std::string id = r.json_body()["run_id"];
  REQUIRE(srv.wait_run(id, "awaiting_approval")["status"] == "awaiting_approval");
  auto store_ids = [&](int64_t after) {
    std::vector<int64_t> out;
    for (auto& row : query(db, "select id from events where run_id=" + sql_literal(id) +
                                   " and id>" + std::to_string(after) + " order by id"))
      out.push_back(std::stoll(row[0]));
    return out;
  };

  SseReader sse(srv.port(), "/api/events?run=" + id);
  REQUIRE(sse.status() == 200);
  CHECK(sse.header("content-type") == "text/event-stream");
  // What happened so far comes from the store...
  std::vector<SseReader::Event> got;
  REQUIRE(!store_ids(0).empty());
  int64_t stored_last = store_ids(0).back();
  while (got.empty() || got.back().id < stored_last) {
    auto e = sse.next(5000);
    REQUIRE(e);
    got.push_back(*e);
  }
  // ...then the rest live, after the approval.
  r = srv.post("/api/runs/" + id + "/approvals/deploy",
               R"({"decision":"approve","approver":"bob","comment":"go"})");
  INFO(show(r));
  REQUIRE(r.status == 200);
  auto rest = sse.until("run.succeeded", 8000);
  got.insert(got.end(), rest.begin(), rest.end());
  REQUIRE(!got.empty());
  CHECK(got.back().event == "run.succeeded");
  std::vector<int64_t> ids;
  for (size_t i = 0; i < got.size(); i++) {
    INFO("event " << i << ": " << got[i].event << " " << got[i].data);
    ids.push_back(got[i].id);
    if (i > 0) CHECK(got[i].id > got[i - 1].id);
    json d = parse_json(got[i].data, nullptr);
    REQUIRE(d.is_object());
    CHECK(d["id"] == got[i].id);
    CHECK(d["kind"] == got[i].event);
    CHECK(d["run_id"] == id);
  }
  CHECK(ids == store_ids(0));
  std::vector<std::string> kinds;
  for (auto& e : got) kinds.push_back(e.event);
  CHECK(std::count(kinds.begin(), kinds.end(), "approval.decided") == 1);
  CHECK(std::count(kinds.begin(), kinds.end(), "run.started") == 1);

  // Reconnecting with Last-Event-ID: N gives exactly what came after N.
  int64_t n = ids[ids.size() / 2];
  {
    SseReader again(srv.port(), "/api/events?run=" + id, {{"Last-Event-ID", std::to_string(n)}});
    REQUIRE(again.status() == 200);
    std::vector<int64_t> after;
    for (auto& e : again.until("run.succeeded", 5000)) after.push_back(e.id);
    CHECK(after == store_ids(n));
    // Nothing more comes; the stream stays open.
    CHECK(!again.next(200));
    CHECK(!again.ended());
  }
  {
    SseReader param(srv.port(), "/api/events?run=" + id + "&last_event_id=" + std::to_string(n));
    std::vector<int64_t> after;
    for (auto& e : param.until("run.succeeded", 5000)) after.push_back(e.id);
    CHECK(after == store_ids(n));
  }
  CHECK(srv.get("/api/events?run=NOSUCHRUN").status == 404);
  CHECK(srv.request("GET", "/api/events", "", {{"Last-Event-ID", "abc"}}).status == 400);

  // A pipeline's stream starts from now: it sees a new run from its start.
  {
    SseReader live(srv.port(), "/api/events?pipeline=sleepy");
    REQUIRE(live.status() == 200);
    auto s = srv.post("/api/pipelines/sleepy/runs", R"({"input":{"sleep":0.05}})");
    REQUIRE(s.status == 202);
    auto evs = live.until("run.succeeded", 5000);
    REQUIRE(!evs.empty());
    CHECK(evs.front().event == "run.started");
    CHECK(evs.back().event == "run.succeeded");
    for (auto& e : evs) CHECK(has(e.data, s.json_body()["run_id"].get<std::string>()));
  }

  // orchrun logs --follow through the server, while a run sleeps.
  auto s = srv.post("/api/pipelines/sleepy/runs", R"({"input":{"sleep":1}})");
  REQUIRE(s.status == 202);
  std::string sleepy = s.json_body()["run_id"];
  auto logs = run_cmd({orchrun_bin(), "logs", sleepy, "--follow", "--server", srv.url()},
                      {"ORCHRUN_DB=" + tmp.file("absent.db"), "NO_COLOR=1"}, "", 20);
  INFO(logs.out << logs.err);
  CHECK(logs.exit_code == 0);
  CHECK(logs.seconds > 0.5);  // it waited for the run
  CHECK(has(logs.out, "run.started"));
  CHECK(has(logs.out, "node.succeeded"));
  CHECK(has(logs.out, "run.succeeded"));
  int64_t lines = std::count(logs.out.begin(), logs.out.end(), '\n');
  CHECK(lines == count(db, "select count(*) from events where run_id=" + sql_literal(sleepy)));
  CHECK(query_str(db, "select status from runs where id=" + sql_literal(sleepy)) == "succeeded");

  // orchrun logs from the store, for a finished run.
  auto stored = orchrun({"logs", id}, db);
  INFO(stored.out << stored.err);
  CHECK(stored.exit_code == 0);
  CHECK(has(stored.out, "approval.decided"));
  CHECK(has(stored.out, "run.succeeded"));
  CHECK(static_cast<int64_t>(std::count(stored.out.begin(), stored.out.end(), '\n')) ==
        static_cast<int64_t>(ids.size()));

  // SIGTERM with a stream and an idle keep-alive connection open: they are closed, and serve
  // exits at once.
  SseReader open_stream(srv.port(), "/api/events");
  REQUIRE(open_stream.status() == 200);
  HttpConnection idle(srv.port());
  REQUIRE(idle.request("GET", "/healthz").status == 200);
  CHECK(srv.stop() == 0);
  CHECK(srv.stop_seconds() < 2.0);
  CHECK(!open_stream.next(2000));
  CHECK(open_stream.ended());
}

// --- 6. approvals -----------------------------------------------------------------------------

TEST_CASE("serve: approval gates are decided through the API", "[serve]") {
  TempDir tmp;
  std::string dir = pipeline_dir(tmp, {{"gate.lua", kGate}});
  std::string db = tmp.file("s.db");
  ServeProcess srv(dir, db);
  auto start = [&] {
    auto r = srv.post("/api/pipelines/gate/runs", "{}");
    REQUIRE(r.status == 202);
    std::string id = r.json_body()["run_id"];
    REQUIRE(srv.wait_run(id, "awaiting_approval")["status"] == "awaiting_approval");
    return id;
  };
  std::string a = start(), b = start();
  auto decide = [&](const std::string& run, const std::string& node, const std::string& body) {
    return srv.post("/api/runs/" + run + "/approvals/" + node, body);
  };
  auto approvals = [&] { return query(db, "select * from approvals order by run_id"); };
  auto before = approvals();

  struct Bad {
    std::string node, body;
    int status;
    std::string code;
  };
  for (const Bad& x : std::vector<Bad>{
           {"deploy", R"({"decision":"maybe","approver":"alice"})", 400, "invalid_body"},
           {"deploy", R"({"decision":"approve"})", 400, "invalid_body"},
           {"deploy", R"({"approver":"alice"})", 400, "invalid_body"},
           {"deploy", R"({"decision":"approve","approver":""})", 400, "invalid_body"},
           {"deploy", R"({"decision":"approve","approver":7})", 400, "invalid_body"},
           {"deploy", R"({"decision":"approve","approver":"alice","comment":[]})", 400,
            "invalid_body"},
           {"deploy", "not json", 400, "invalid_json"},
           {"deploy", "[]", 400, "invalid_body"},
           {"nope", R"({"decision":"approve","approver":"alice"})", 404, "not_found"},
           {"plan", R"({"decision":"approve","approver":"alice"})", 404, "not_found"},
           {"deploy", R"({"decision":"approve","approver":"mallory"})", 403, "forbidden"},
       }) {
    auto r = decide(a, x.node, x.body);
    INFO(x.node << " " << x.body << " -> " << show(r));
    CHECK(r.status == x.status);
    CHECK(r.error_code() == x.code);
  }
  CHECK(decide("NOSUCHRUN", "deploy", R"({"decision":"approve","approver":"alice"})").status ==
        404);
  CHECK(approvals() == before);
  CHECK(query_str(db, "select status from runs where id=" + sql_literal(a)) == "awaiting_approval");

  // Approve: the run goes on here and succeeds.
  auto r = decide(a, "deploy", R"({"decision":"approve","approver":"alice","comment":"lgtm"})");
  INFO(show(r));
  REQUIRE(r.status == 200);
  CHECK(r.json_body()["decision"] == "approved");
  CHECK(r.json_body()["by"] == "alice");
  CHECK(r.json_body()["continued"] == "here");
  json run = srv.wait_run(a, "succeeded,failed");
  CHECK(run["status"] == "succeeded");
  CHECK(run["output"] == json::parse(R"({"by":"alice","note":"lgtm"})"));
  CHECK(query_str(db,
                  "select status || '|' || decided_by || '|' || comment from approvals "
                  "where run_id=" +
                      sql_literal(a)) == "approved|alice|lgtm");
  // Twice: 409.
  r = decide(a, "deploy", R"({"decision":"approve","approver":"alice"})");
  CHECK(r.status == 409);
  CHECK(r.error_code() == "conflict");
  r = decide(a, "deploy", R"({"decision":"reject","approver":"bob"})");
  CHECK(r.status == 409);

  // Reject: the run fails, saying who and why.
  r = decide(b, "deploy", R"({"decision":"reject","approver":"bob","comment":"freeze week"})");
  INFO(show(r));
  REQUIRE(r.status == 200);
  CHECK(r.json_body()["decision"] == "rejected");
  run = srv.wait_run(b, "succeeded,failed");
  CHECK(run["status"] == "failed");
  CHECK(run["error"]["type"] == "rejected");
  CHECK(has(run["error"]["message"].get<std::string>(), "bob"));
  CHECK(count(db, "select count(*) from node_runs where run_id=" + sql_literal(b) +
                      " and node_id='ship'") == 0);
  CHECK(decide(b, "deploy", R"({"decision":"approve","approver":"alice"})").status == 409);

  // A run waiting at its gate can be cancelled; its gate can then no longer be decided.
  std::string c = start();
  r = srv.post("/api/runs/" + c + "/cancel", R"({"reason":"not today"})");
  INFO(show(r));
  CHECK(r.status == 200);
  CHECK(srv.wait_run(c, "cancelled,succeeded,failed")["status"] == "cancelled");
  r = decide(c, "deploy", R"({"decision":"approve","approver":"alice"})");
  INFO(show(r));
  CHECK(r.status == 409);
  CHECK(query_str(db, "select status from runs where id=" + sql_literal(c)) == "cancelled");
  CHECK(count(db, "select count(*) from node_runs where run_id=" + sql_literal(c) +
                      " and node_id='ship'") == 0);

  // A run parked at its gate by a one-shot `orchrun FILE` (exit 4, process gone): approved
  // through the API, the server resumes it.
  std::string file = tmp.file("gate-oneshot.lua");
  write_file(file, kGate);
  auto oneshot = orchrun({file}, db);
  INFO(oneshot.out << oneshot.err);
  REQUIRE(oneshot.exit_code == 4);
  std::string parked =
      query_str(db, "select id from runs where status='awaiting_approval' and source='cli'");
  REQUIRE(!parked.empty());
  r = decide(parked, "deploy",
             R"({"decision":"approve","approver":"bob","comment":"from the API"})");
  INFO(show(r));
  REQUIRE(r.status == 200);
  CHECK(r.json_body()["continued"] == "resumed");
  run = srv.wait_run(parked, "succeeded,failed");
  CHECK(run["status"] == "succeeded");
  CHECK(run["output"] == json::parse(R"({"by":"bob","note":"from the API"})"));
  CHECK(count(db, "select count(*) from node_runs where run_id=" + sql_literal(parked) +
                      " and node_id='plan'") == 1);
  CHECK(srv.stop() == 0);
}

// --- 7. cancel and retry ----------------------------------------------------------------------

TEST_CASE("serve: cancel and retry through the API", "[serve]") {
  TempDir tmp;
  std::string dir = pipeline_dir(tmp, {{"sleepy.lua", kSleepy}});
  std::string db = tmp.file("s.db");
  ServeProcess srv(dir, db);
  auto r = srv.post("/api/pipelines/sleepy/runs", "{}");
  REQUIRE(r.status == 202);
  std::string id = r.json_body()["run_id"];
  REQUIRE(eventually([&] {
    return count(db, "select count(*) from node_runs where run_id=" + sql_literal(id) +
                         " and node_id='a' and status='running'") == 1;
  }));
  int64_t t0 = mono_ms();
  r = srv.post("/api/runs/" + id + "/cancel", R"({"reason":"maintenance window"})");
  INFO(show(r));
  REQUIRE(r.status == 200);
  CHECK(r.json_body()["status"] == "cancelled");
  REQUIRE(eventually([&] {
    return query_str(db, "select status from runs where id=" + sql_literal(id)) == "cancelled";
  }));
  CHECK(mono_ms() - t0 < 3000);  // not the 30 s sleep
  CHECK(query_str(db, "select error_message from runs where id=" + sql_literal(id)) ==
        "maintenance window");
  CHECK(query_str(db, "select status from node_runs where run_id=" + sql_literal(id) +
                          " and node_id='a'") == "cancelled");
  r = srv.post("/api/runs/" + id + "/cancel", "{}");
  CHECK(r.status == 409);
  CHECK(r.error_code() == "conflict");
  CHECK(srv.post("/api/runs/" + id + "/cancel", R"({"reason":5})").status == 400);

  // Retry: the cancelled node runs again (attempt 2, no sleep) and the run succeeds.
  r = srv.post("/api/runs/" + id + "/retry");
  INFO(show(r));
  REQUIRE(r.status == 202);
  CHECK(r.json_body()["run_attempt"] == 2);
  json run = srv.wait_run(id, "succeeded,failed,cancelled");
  CHECK(run["status"] == "succeeded");
  CHECK(run["attempts"] == 2);
  CHECK(query_str(db, "select status || '|' || attempts from runs where id=" + sql_literal(id)) ==
        "succeeded|2");
  CHECK(query_str(db,
                  "select group_concat(attempt || ':' || run_attempt || ':' || status, ' ') "
                  "from node_runs where run_id=" +
                      sql_literal(id) + " and node_id='a' order by seq") ==
        "1:1:cancelled 2:2:succeeded");
  CHECK(count(db, "select count(*) from events where run_id=" + sql_literal(id) +
                      " and kind='run.retried'") == 1);
  // Neither can be done to a succeeded run.
  CHECK(srv.post("/api/runs/" + id + "/retry").status == 409);
  CHECK(srv.post("/api/runs/" + id + "/cancel").status == 409);
  // Unknown ids.
  for (const char* t : {"/api/runs/NOSUCHRUN/cancel", "/api/runs/NOSUCHRUN/retry"}) {
    auto x = srv.post(t);
    CHECK(x.status == 404);
    CHECK(x.error_code() == "not_found");
  }
  CHECK(srv.get("/api/runs/NOSUCHRUN").status == 404);

  // A run owned by another orchrun process (a one-shot): the API records the request (202)
  // and the owner, which polls for it, cancels the run.
  std::string file = tmp.file("own.lua");
  write_file(file, R"(local o = require "orch"
return o.pipeline "own" { o.node("wait", function() o.sleep(30) return {} end) }
)");
  pid_t owner = spawn_quiet({orchrun_bin(), file, "--db", db});
  std::string owned;
  REQUIRE(eventually([&] {
    if (poll_int(db,
                 "select count(*) from node_runs n join runs r on r.id=n.run_id where "
                 "r.pipeline='own' and n.status='running'",
                 0) != 1)
      return false;
    owned = query_str(db, "select id from runs where pipeline='own'");
    return true;
  }));
  r = srv.post("/api/runs/" + owned + "/cancel", R"({"reason":"from the API"})");
  INFO(show(r));
  CHECK(r.status == 202);
  CHECK(r.json_body()["status"] == "cancel_requested");
  CHECK(r.json_body()["owner_pid"] == owner);
  int status = 0;
  bool gone = eventually([&] { return waitpid(owner, &status, WNOHANG) == owner; }, 5000);
  if (!gone) {
    kill(owner, SIGKILL);
    waitpid(owner, &status, 0);
  }
  REQUIRE(gone);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 1);
  CHECK(query_str(db, "select status || '|' || error_message from runs where id=" +
                          sql_literal(owned)) == "cancelled|from the API");
  CHECK(srv.stop() == 0);
}

// --- 8. hot reload ----------------------------------------------------------------------------

namespace {

std::string hot_source(int v) {
  return R"(local o = require "orch"
return o.pipeline "hot" {
  o.node("a", function(ctx)
    if ctx.input.sleep then o.sleep(ctx.input.sleep) end
    return { v = )" +
         std::to_string(v) + R"( }
  end),
}
)";
}

}  // namespace

TEST_CASE("serve: pipeline files are reloaded when they change", "[serve]") {
  TempDir tmp;
  std::string dir = pipeline_dir(tmp, {{"hot.lua", hot_source(1)}});
  std::string file = dir + "/hot.lua";
  std::string db = tmp.file("s.db");
  ServeProcess srv(dir, db);
  auto pipeline = [&](const std::string& name) {
    return srv.get("/api/pipelines/" + name).json_body();
  };
  auto start = [&](const std::string& body) {
    auto r = srv.post("/api/pipelines/hot/runs", body);
    INFO(show(r));
    REQUIRE(r.status == 202);
    return r.json_body()["run_id"].get<std::string>();
  };
  // Polls GET /api/pipelines/NAME until cond holds; the delay since `since`, in ms.
  auto wait_for = [&](const std::string& name, int64_t since,
                      const std::function<bool(const json&)>& cond) -> int64_t {
    json last;
    bool ok = eventually(
        [&] {
          last = pipeline(name);
          return cond(last);
        },
        5000, 2);
    INFO(last.dump());
    REQUIRE(ok);
    return mono_ms() - since;
  };
  json p = pipeline("hot");
  REQUIRE(p["version"] == 1);
  CHECK(p["active"] == true);

  // (a, b) A run in flight on v1; a valid change (renamed into place) becomes v2.
  std::string r1 = start(R"({"input":{"sleep":1.0}})");
  REQUIRE(eventually([&] {
    return count(db, "select count(*) from node_runs where run_id=" + sql_literal(r1) +
                         " and status='running'") == 1;
  }));
  int64_t t = mono_ms();
  write_atomic(file, hot_source(2));
  int64_t d_rename = wait_for("hot", t, [](const json& j) { return j.value("version", 0) == 2; });
  std::printf("hot reload: valid change, renamed into place: served after %lld ms\n",
              static_cast<long long>(d_rename));
  CHECK(d_rename < 5000);
  p = pipeline("hot");
  CHECK(p["versions"].size() == 2);
  CHECK(p["error"].is_null());
  std::string r2 = start("{}");
  json run2 = srv.wait_run(r2, "succeeded,failed");
  CHECK(run2["version"] == 2);
  CHECK(run2["output"]["v"] == 2);
  json run1 = srv.wait_run(r1, "succeeded,failed");
  CHECK(run1["status"] == "succeeded");
  CHECK(run1["version"] == 1);
  CHECK(run1["output"]["v"] == 1);
  CHECK(query_str(db, "select version from runs where id=" + sql_literal(r1)) == "1");

  // (c) An invalid change (overwritten in place): v2 stays active, the error is shown and
  // stored.
  t = mono_ms();
  write_file(file,
             "local o = require \"orch\"\nreturn o.pipeline \"hot\" {\n  o.node(\"a\", function( "
             "return {} end),\n}\n");
  int64_t d_invalid = wait_for("hot", t, [](const json& j) { return j["error"].is_object(); });
  std::printf("hot reload: syntax error, overwritten in place: reported after %lld ms\n",
              static_cast<long long>(d_invalid));
  p = pipeline("hot");
  INFO(p.dump());
  CHECK(p["active"] == true);
  CHECK(p["version"] == 2);
  CHECK(has(p["error"]["message"].get<std::string>(), "hot.lua:3:"));
  CHECK(count(db, "select count(*) from pipeline_loads where outcome='invalid' and path=" +
                      sql_literal(file)) == 1);
  CHECK(
      has(query_str(db, "select error from pipeline_loads where outcome='invalid'"), "hot.lua:3:"));
  CHECK(srv.wait_run(start("{}"), "succeeded,failed")["version"] == 2);
  // Fixed again (the v2 source): the error is cleared, still v2.
  t = mono_ms();
  write_file(file, hot_source(2));
  int64_t d_fixed = wait_for("hot", t, [](const json& j) { return j["error"].is_null(); });
  std::printf("hot reload: fixed again: error cleared after %lld ms\n",
              static_cast<long long>(d_fixed));
  CHECK(pipeline("hot")["version"] == 2);
  CHECK(pipeline("hot")["versions"].size() == 2);

  // (d) The same content written again: nothing new.
  int64_t loads = count(db, "select count(*) from pipeline_loads");
  write_file(file, hot_source(2));
  write_atomic(file, hot_source(2));
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  CHECK(pipeline("hot")["versions"].size() == 2);
  CHECK(count(db, "select count(*) from definitions") == 2);
  CHECK(count(db, "select count(*) from pipeline_loads") == loads);

  // (e) Deleted: no new run; the one in flight finishes.
  std::string r3 = start(R"({"input":{"sleep":0.8}})");
  REQUIRE(eventually([&] {
    return count(db, "select count(*) from node_runs where run_id=" + sql_literal(r3) +
                         " and status='running'") == 1;
  }));
  t = mono_ms();
  REQUIRE(unlink(file.c_str()) == 0);
  int64_t d_removed = wait_for("hot", t, [](const json& j) { return j["active"] == false; });
  std::printf("hot reload: file deleted: deactivated after %lld ms\n",
              static_cast<long long>(d_removed));
  CHECK(pipeline("hot")["removed"] == true);
  auto refused = srv.post("/api/pipelines/hot/runs", "{}");
  INFO(show(refused));
  CHECK((refused.status == 404 || refused.status == 409));
  json run3 = srv.wait_run(r3, "succeeded,failed");
  CHECK(run3["status"] == "succeeded");
  CHECK(run3["version"] == 2);
  CHECK(count(db, "select count(*) from pipeline_loads where outcome='removed'") == 1);

  // (f) A new file: a new pipeline, served.
  t = mono_ms();
  write_atomic(dir + "/fresh.lua", R"(local o = require "orch"
return o.pipeline "fresh" { o.node("n", function() return { fresh = true } end) }
)");
  int64_t d_new = wait_for("fresh", t, [](const json& j) { return j.value("active", false); });
  std::printf("hot reload: new file: served after %lld ms\n", static_cast<long long>(d_new));
  auto fr = srv.post("/api/pipelines/fresh/runs", "{}");
  REQUIRE(fr.status == 202);
  CHECK(srv.wait_run(fr.json_body()["run_id"], "succeeded,failed")["output"]["fresh"] == true);
  // And the deleted one coming back is served again.
  write_file(file, hot_source(3));
  wait_for("hot", mono_ms(), [](const json& j) { return j.value("active", false); });
  CHECK(srv.wait_run(start("{}"), "succeeded,failed")["output"]["v"] == 3);
  CHECK(srv.stop() == 0);
}

TEST_CASE("serve: webhook routes follow their pipeline across reloads", "[serve]") {
  TempDir tmp;
  auto source = [](const std::string& name, const std::string& path) {
    return "local o = require \"orch\"\nreturn o.pipeline \"" + name +
           "\" {\n  triggers = { o.webhook { path = \"" + path +
           "\" } },\n  o.node(\"n\", function() return {} end),\n}\n";
  };
  std::string dir = pipeline_dir(
      tmp, {{"a.lua", source("alpha", "/hooks/a")}, {"b.lua", source("bravo", "/hooks/b")}});
  std::string db = tmp.file("s.db");
  ServeProcess srv(dir, db);
  auto hook = [&](const std::string& path) { return srv.request("POST", path, "{}"); };
  auto until_true = [&](const std::function<bool()>& cond) { REQUIRE(eventually(cond, 5000, 5)); };
  auto r = hook("/hooks/a");
  REQUIRE(r.status == 202);
  CHECK(r.json_body()["pipeline"] == "alpha");

  // The path changes: the old one is gone, the new one starts runs.
  write_atomic(dir + "/a.lua", source("alpha", "/hooks/a2"));
  until_true([&] { return srv.get("/api/pipelines/alpha").json_body().value("version", 0) == 2; });
  CHECK(hook("/hooks/a").status == 404);
  CHECK(hook("/hooks/a2").status == 202);

  // The pipeline is renamed in its file: it keeps its path.
  write_atomic(dir + "/a.lua", source("alpha2", "/hooks/a2"));
  until_true([&] {
    return srv.get("/api/pipelines/alpha2").status == 200 ||
           srv.get("/api/pipelines/alpha").json_body()["error"].is_object();
  });
  json p = srv.get("/api/pipelines/alpha2").json_body();
  INFO(srv.get("/api/pipelines").body);
  CHECK(p["active"] == true);
  CHECK(p["error"].is_null());
  r = hook("/hooks/a2");
  CHECK(r.status == 202);
  CHECK(r.json_body()["pipeline"] == "alpha2");
  CHECK(srv.get("/api/pipelines/alpha").status == 404);

  // Another file cannot take a path in use: it stays on its previous version.
  write_atomic(dir + "/b.lua", source("bravo", "/hooks/a2"));
  until_true([&] { return srv.get("/api/pipelines/bravo").json_body()["error"].is_object(); });
  CHECK(has(srv.get("/api/pipelines/bravo").json_body()["error"]["message"].get<std::string>(),
            "already used by pipeline alpha2"));
  CHECK(hook("/hooks/a2").json_body()["pipeline"] == "alpha2");
  CHECK(hook("/hooks/b").json_body()["pipeline"] == "bravo");

  // The file deleted: its path goes with it.
  REQUIRE(unlink((dir + "/a.lua").c_str()) == 0);
  until_true([&] { return hook("/hooks/a2").status == 404; });
  CHECK(srv.stop() == 0);
}

// --- 9. graceful shutdown and resume ----------------------------------------------------------

TEST_CASE("serve: SIGTERM lets the running node finish, and the next start resumes the run",
          "[serve]") {
  TempDir tmp;
  std::string dir = pipeline_dir(tmp, {{"abc.lua", R"(local o = require "orch"
return o.pipeline "abc" {
  o.node("a", function() o.sleep(0.3) return { n = 1 } end),
  o.node("b", function() o.sleep(0.3) return { n = 2 } end),
  o.node("c", function(ctx) return { sum = ctx.outputs.a.n + ctx.outputs.b.n } end),
}
)"}});
  std::string db = tmp.file("s.db");
  std::string id;
  int port = 0;
  std::unique_ptr<BackgroundCmd> logs;
  {
    ServeProcess srv(dir, db, {"--grace", "5s"});
    port = srv.port();
    auto r = srv.post("/api/pipelines/abc/runs", "{}");
    REQUIRE(r.status == 202);
    id = r.json_body()["run_id"];
    // Someone follows the run through the server; they will ride over the restart.
    logs = std::make_unique<BackgroundCmd>(
        std::vector<std::string>{orchrun_bin(), "logs", id, "--follow", "--server", srv.url()},
        std::vector<std::string>{"ORCHRUN_DB=" + tmp.file("absent.db"), "NO_COLOR=1"},
        tmp.file("logs.out"));
    REQUIRE(eventually([&] {
      return count(db, "select count(*) from node_runs where run_id=" + sql_literal(id) +
                           " and node_id='a' and status='running'") == 1;
    }));
    int code = srv.stop(SIGTERM, 8000);
    INFO(srv.log());
    CHECK(code == 0);
    CHECK(srv.stop_seconds() < 3.0);  // a's 0.3 s, well within the grace
    CHECK(has(srv.log(), "shutting down"));
    CHECK(has(srv.log(), "1 run(s) left as they stand"));
  }
  CHECK(query_str(db, "select status from runs where id=" + sql_literal(id)) == "running");
  CHECK(query_str(
            db, "select group_concat(node_id || ':' || status, ' ') from node_runs where run_id=" +
                    sql_literal(id)) == "a:succeeded");

  // The same port, so that the follower finds the server again.
  ServeProcess again(dir, db, {"--grace", "5s"}, {}, "127.0.0.1:" + std::to_string(port));
  json run = again.wait_run(id, "succeeded,failed,cancelled");
  INFO(again.log());
  CHECK(run["status"] == "succeeded");
  CHECK(run["output"]["sum"] == 3);
  CHECK(has(again.log(), "resumed 1 unfinished run(s)"));
  for (const char* node : {"a", "b", "c"}) {
    INFO(node);
    CHECK(count(db, "select count(*) from node_runs where run_id=" + sql_literal(id) +
                        " and node_id=" + sql_literal(node) + " and status='succeeded'") == 1);
  }
  CHECK(count(db, "select count(*) from node_runs where run_id=" + sql_literal(id) +
                      " and node_id='a'") == 1);
  CHECK(count(db, "select count(*) from events where run_id=" + sql_literal(id) +
                      " and kind='run.resumed'") == 1);
  // The follower printed every event once and exited 0 with the run.
  int code = logs->wait(10000);
  INFO(logs->out() << logs->err());
  CHECK(code == 0);
  std::string out = logs->out();
  CHECK(static_cast<int64_t>(std::count(out.begin(), out.end(), '\n')) ==
        count(db, "select count(*) from events where run_id=" + sql_literal(id)));
  CHECK(has(out, "run.resumed"));
  CHECK(has(out, "run.succeeded"));
  CHECK(again.stop() == 0);
}

TEST_CASE(
    "serve: when the grace runs out, the attempt is interrupted and runs again on the "
    "run's version after the restart",
    "[serve]") {
  TempDir tmp;
  auto source = [](int v) {
    return R"(local o = require "orch"
return o.pipeline "long" {
  o.node("a", function(ctx)
    if ctx.attempt == 1 then o.exec { "sleep", "29.75" } end
    return { v = )" +
           std::to_string(v) + R"(, attempt = ctx.attempt }
  end),
  o.node("b", function(ctx) return { v = )" +
           std::to_string(v) + R"( } end),
}
)";
  };
  std::string dir = pipeline_dir(tmp, {{"long.lua", source(1)}});
  std::string db = tmp.file("s.db");
  auto sleeping = [] {
    return run_cmd({"pgrep", "-f", "^sleep 29.75$"}, {}, "", 10).exit_code == 0;
  };
  std::string id;
  {
    ServeProcess srv(dir, db, {"--grace", "1s"});
    HttpConnection open_before(srv.port());
    REQUIRE(open_before.request("GET", "/healthz").status == 200);
    auto r = srv.post("/api/pipelines/long/runs", "{}");
    REQUIRE(r.status == 202);
    id = r.json_body()["run_id"];
    REQUIRE(eventually(sleeping));
    srv.signal(SIGTERM);
    REQUIRE(eventually([&] { return has(srv.log(), "shutting down"); }, 3000, 2));
    // During the grace: no new connection; one that was open is told the server is going.
    CHECK(http_request(srv.port(), "GET", "/healthz", "", {}, 1000).status == 0);
    auto h = open_before.request("GET", "/healthz");
    INFO(show(h));
    CHECK(h.status == 503);
    CHECK(h.json_body()["status"] == "shutting_down");
    auto p = open_before.request("POST", "/api/pipelines/long/runs", "{}");
    INFO(show(p));
    CHECK(p.status == 503);
    CHECK(p.error_code() == "shutting_down");
    CHECK(srv.wait_exit(8000) == 0);
    INFO(srv.log());
    CHECK(srv.stop_seconds() >= 0.9);  // it gave the attempt its grace...
    CHECK(srv.stop_seconds() < 4.0);   // ...and no more
  }
  CHECK(eventually([&] { return !sleeping(); }, 3000));  // the process group was killed
  CHECK(query_str(db, "select status from runs where id=" + sql_literal(id)) == "running");
  CHECK(query_str(db,
                  "select group_concat(node_id || ':' || status, ' ') from node_runs where "
                  "run_id=" +
                      sql_literal(id)) == "a:running");

  // The file changes meanwhile: the run resumes on the version it started with.
  write_file(dir + "/long.lua", source(2));
  ServeProcess again(dir, db);
  json run = again.wait_run(id, "succeeded,failed,cancelled");
  CHECK(run["status"] == "succeeded");
  CHECK(run["version"] == 1);
  CHECK(run["output"] == json::parse(R"({"v":1})"));
  CHECK(query_str(
            db,
            "select group_concat(attempt || ':' || status || ':' || coalesce(error_type, ''), ' ') "
            "from node_runs where run_id=" +
                sql_literal(id) + " and node_id='a' order by seq") ==
        "1:failed:interrupted 2:succeeded:");
  CHECK(again.get("/api/pipelines/long").json_body()["version"] == 2);

  // A second SIGTERM does not wait for the grace (10 s here): the child processes are
  // killed and serve exits at once, 143.
  auto r = again.post("/api/pipelines/long/runs", "{}");
  REQUIRE(r.status == 202);
  REQUIRE(eventually(sleeping));
  again.signal(SIGTERM);
  REQUIRE(eventually([&] { return has(again.log(), "shutting down"); }, 3000, 2));
  again.signal(SIGTERM);
  CHECK(again.wait_exit(5000) == 143);
  CHECK(again.stop_seconds() < 3.0);
  CHECK(eventually([&] { return !sleeping(); }, 3000));
  CHECK(query_str(db, "select status from runs where id=" +
                          sql_literal(r.json_body()["run_id"].get<std::string>())) ==
        "running");  // resumed by the next start
}

// --- 10. malformed requests and limits --------------------------------------------------------

TEST_CASE("serve: malformed requests and limits get JSON errors and the server carries on",
          "[serve]") {
  TempDir tmp;
  std::string dir = pipeline_dir(tmp, {{"x.lua", kTrivial}});
  std::string db = tmp.file("s.db");
  ServeProcess srv(dir, db, {"--max-body", "1KiB"});
  auto healthy = [&] {
    auto h = srv.get("/healthz");
    return h.status == 200 && h.json_body()["status"] == "ok";
  };
  auto expect = [&](const HttpReply& r, int status, const std::string& code) {
    INFO(show(r));
    CHECK(r.status == status);
    CHECK(has(r.header("content-type"), "application/json"));
    if (!code.empty()) CHECK(r.error_code() == code);
    CHECK(healthy());
  };
  expect(http_raw(srv.port(), "GARBAGE\r\n\r\n"), 400, "bad_request");
  expect(http_raw(srv.port(), "GET /healthz HTTP/1.1\r\nHost x\r\n\r\n"), 400, "bad_request");
  expect(http_raw(srv.port(), "GET /healthz HTTP/1.1\r\nContent-Length: -5\r\n\r\n"), 400,
         "bad_request");
  expect(http_raw(srv.port(),
                  "GET /healthz HTTP/1.1\r\nX-Big: " + std::string(70 * 1024, 'a') + "\r\n\r\n"),
         431, "headers_too_large");
  std::string big = R"({"input":{"pad":")" + std::string(2000, 'p') + "\"}}";
  expect(srv.post("/api/pipelines/x/runs", big), 413, "body_too_large");
  expect(http_raw(srv.port(),
                  "POST /api/pipelines/x/runs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
                  "chunked\r\nConnection: close\r\n\r\n800\r\n" +
                      std::string(0x800, ' ') + "\r\n0\r\n\r\n"),
         413, "body_too_large");
  expect(srv.get("/nope"), 404, "not_found");
  expect(srv.get("/api/nope"), 404, "not_found");
  expect(srv.get("/api/runs/X/bogus"), 404, "not_found");
  auto m = srv.request("DELETE", "/api/runs");
  expect(m, 405, "method_not_allowed");
  CHECK(m.header("allow") == "GET");
  m = srv.get("/api/pipelines/x/runs");
  expect(m, 405, "method_not_allowed");
  CHECK(m.header("allow") == "POST");
  m = srv.request("PUT", "/healthz", "{}");
  expect(m, 405, "method_not_allowed");
  CHECK(m.header("allow") == "GET");
  expect(srv.post("/api/pipelines/nope/runs", "{}"), 404, "not_found");
  expect(srv.post("/api/pipelines/x/runs", "{not json"), 400, "invalid_json");
  expect(srv.post("/api/pipelines/x/runs", R"({"input":[1,2]})"), 400, "invalid_body");
  expect(srv.post("/api/pipelines/x/runs", R"({"input":"text"})"), 400, "invalid_body");
  expect(srv.post("/api/pipelines/x/runs", "[1]"), 400, "invalid_body");
  expect(srv.post("/api/pipelines/x/runs", R"({"idempotency_key":5})"), 400, "invalid_body");
  CHECK(count(db, "select count(*) from runs") == 0);

  // A body just under the limit, and a chunked one, are fine.
  std::string ok_body = R"({"input":{"pad":")" + std::string(900, 'p') + "\"}}";
  auto r = srv.post("/api/pipelines/x/runs", ok_body);
  INFO(show(r));
  CHECK(r.status == 202);
  r = http_raw(
      srv.port(),
      "POST /api/pipelines/x/runs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
      "chunked\r\nConnection: close\r\n\r\n5\r\n{\"inp\r\nc\r\nut\":{\"i\":7}}\r\n0\r\n\r\n");
  INFO(show(r));
  CHECK(r.status == 202);
  CHECK(count(db, "select count(*) from runs") == 2);
  CHECK(srv.stop() == 0);
}

// --- 11. metrics ------------------------------------------------------------------------------

TEST_CASE("serve: /metrics is Prometheus text with runs, nodes, webhooks and reloads", "[serve]") {
  TempDir tmp;
  std::string dir = pipeline_dir(tmp, {{"m.lua", R"(local o = require "orch"
return o.pipeline "m" {
  triggers = { o.webhook { path = "/hooks/m", secret = "M", dedup_header = "X-Delivery" } },
  o.node("one", function() return {} end),
}
)"},
                                       {"failing.lua", kFailing},
                                       {"sleepy.lua", kSleepy}});
  std::string db = tmp.file("s.db");
  ServeProcess srv(dir, db, {"--grace", "1s"}, {"ORCHRUN_SECRET_M=m-secret"});
  std::vector<std::string> ids;
  for (int i = 0; i < 2; i++) {
    auto r = srv.post("/api/pipelines/m/runs", "{}");
    REQUIRE(r.status == 202);
    ids.push_back(r.json_body()["run_id"]);
  }
  auto deliver = [&](const std::string& body, const std::string& delivery, const std::string& key) {
    return srv.request("POST", "/hooks/m", body,
                       {{"X-Hub-Signature-256", "sha256=" + hmac_sha256_hex(key, body)},
                        {"X-Delivery", delivery}});
  };
  auto w1 = deliver(R"({"a":1})", "d1", "m-secret");
  REQUIRE(w1.status == 202);
  ids.push_back(w1.json_body()["run_id"]);
  auto w2 = deliver(R"({"a":2})", "d2", "m-secret");
  REQUIRE(w2.status == 202);
  ids.push_back(w2.json_body()["run_id"]);
  CHECK(deliver(R"({"a":1})", "d1", "m-secret").status == 200);  // duplicate
  CHECK(deliver(R"({"a":3})", "d3", "wrong").status == 401);     // bad signature
  auto f = srv.post("/api/pipelines/failing/runs", "{}");
  REQUIRE(f.status == 202);
  ids.push_back(f.json_body()["run_id"]);
  for (auto& id : ids) srv.wait_run(id, "succeeded,failed");
  auto sl = srv.post("/api/pipelines/sleepy/runs", "{}");  // stays in flight
  REQUIRE(sl.status == 202);
  // A reload and an invalid file.
  write_atomic(dir + "/m.lua", std::string(R"(local o = require "orch"
return o.pipeline "m" {
  triggers = { o.webhook { path = "/hooks/m", secret = "M", dedup_header = "X-Delivery" } },
  o.node("one", function() return { changed = true } end),
}
)"));
  write_file(dir + "/broken.lua", "return {");
  REQUIRE(eventually([&] {
    json p = srv.get("/api/pipelines/m").json_body();
    json b = srv.get("/api/pipelines/broken").json_body();
    return p.value("version", 0) == 2 && b.is_object() && b["error"].is_object();
  }));

  auto r = srv.get("/metrics");
  REQUIRE(r.status == 200);
  CHECK(r.header("content-type") == "text/plain; version=0.0.4; charset=utf-8");
  // Parse: every sample line is NAME{LABELS} VALUE or NAME VALUE, each series once, each
  // metric with a TYPE line before its samples.
  std::map<std::string, double> v;
  std::set<std::string> typed;
  static const std::regex kSample(
      R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (-?[0-9.eE+-]+|\+Inf|NaN)$)");
  std::string line;
  size_t pos = 0;
  const std::string& body = r.body;
  CHECK(!body.empty());
  CHECK(body.back() == '\n');
  while (pos < body.size()) {
    size_t nl = body.find('\n', pos);
    if (nl == std::string::npos) nl = body.size();
    line = body.substr(pos, nl - pos);
    pos = nl + 1;
    if (line.rfind("# TYPE ", 0) == 0) {
      std::string rest = line.substr(7);
      typed.insert(rest.substr(0, rest.find(' ')));
      continue;
    }
    if (line.rfind("# HELP ", 0) == 0) continue;
    std::smatch m;
    INFO("line: " << line);
    REQUIRE(std::regex_match(line, m, kSample));
    std::string name = m[1].str();
    std::string base = name;
    for (const char* suffix : {"_bucket", "_sum", "_count"})
      if (base.size() > strlen(suffix) &&
          base.compare(base.size() - strlen(suffix), strlen(suffix), suffix) == 0 &&
          typed.count(base.substr(0, base.size() - strlen(suffix))))
        base = base.substr(0, base.size() - strlen(suffix));
    CHECK(typed.count(base) == 1);
    std::string series = name + m[2].str();
    CHECK(v.count(series) == 0);
    v[series] = std::stod(m[3].str());
  }
  auto val = [&](const std::string& series) {
    INFO(series << "\n" << body);
    REQUIRE(v.count(series) == 1);
    return v[series];
  };
  CHECK(val(R"(orchrun_runs_started_total{pipeline="m",source="webhook"})") == 2);
  CHECK(val(R"(orchrun_runs_started_total{pipeline="m",source="api"})") == 2);
  CHECK(val(R"(orchrun_runs_started_total{pipeline="failing",source="api"})") == 1);
  CHECK(val(R"(orchrun_runs_finished_total{pipeline="m",status="succeeded"})") == 4);
  CHECK(val(R"(orchrun_runs_finished_total{pipeline="failing",status="failed"})") == 1);
  CHECK(val(R"(orchrun_node_attempts_total{pipeline="m",status="succeeded"})") == 4);
  CHECK(val(R"(orchrun_node_attempts_total{pipeline="failing",status="failed"})") == 1);
  CHECK(val(R"(orchrun_run_duration_seconds_bucket{pipeline="m",le="+Inf"})") == 4);
  CHECK(val(R"(orchrun_run_duration_seconds_count{pipeline="m"})") == 4);
  CHECK(val(R"(orchrun_run_duration_seconds_bucket{pipeline="m",le="10"})") == 4);
  // Buckets are cumulative.
  double prev = 0;
  for (const char* le : {"0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5",
                         "10", "30", "60", "300", "900", "3600", "+Inf"}) {
    double x =
        val(std::string(R"(orchrun_run_duration_seconds_bucket{pipeline="m",le=")") + le + "\"}");
    CHECK(x >= prev);
    prev = x;
  }
  CHECK(val(R"(orchrun_webhook_deliveries_total{pipeline="m",outcome="accepted"})") == 2);
  CHECK(val(R"(orchrun_webhook_deliveries_total{pipeline="m",outcome="duplicate"})") == 1);
  CHECK(val(R"(orchrun_webhook_deliveries_total{pipeline="m",outcome="bad_signature"})") == 1);
  CHECK(val(R"(orchrun_reloads_total{outcome="loaded"})") == 4);  // 3 at start, 1 change
  CHECK(val(R"(orchrun_reloads_total{outcome="invalid"})") == 1);
  CHECK(val("orchrun_runs_in_flight") == 1);
  CHECK(val(R"(orchrun_runs{status="running"})") == 1);
  CHECK(val(R"(orchrun_runs{status="succeeded"})") == 4);
  CHECK(val(R"(orchrun_pipelines{state="active"})") == 3);
  CHECK(val(R"(orchrun_pipelines{state="invalid"})") == 1);
  CHECK(val("process_start_time_seconds") > 1.7e9);

  auto h = srv.get("/healthz");
  REQUIRE(h.status == 200);
  json hj = h.json_body();
  CHECK(hj["status"] == "ok");
  CHECK(hj["pipelines"] == 3);
  CHECK(hj["pipelines_invalid"] == 1);
  CHECK(hj["runs_active"] == 1);
  // An invalid file's pipeline cannot be started.
  auto b = srv.post("/api/pipelines/broken/runs", "{}");
  CHECK(b.status == 409);
  CHECK(b.error_code() == "not_active");
  // Once the sleeping run is cancelled, nothing is in flight.
  REQUIRE(srv.post("/api/runs/" + sl.json_body()["run_id"].get<std::string>() + "/cancel").status ==
          200);
  REQUIRE(
      eventually([&] { return has(srv.get("/metrics").body, "\norchrun_runs_in_flight 0\n"); }));
  CHECK(has(srv.get("/metrics").body,
            "orchrun_runs_finished_total{pipeline=\"sleepy\",status=\"cancelled\"} 1\n"));
  CHECK(srv.stop() == 0);
}

// --- 12. validate -----------------------------------------------------------------------------

TEST_CASE("serve: POST /api/pipelines/NAME/validate checks a source without running it",
          "[serve]") {
  TempDir tmp;
  std::string dir =
      pipeline_dir(tmp, {{"x.lua", kTrivial}, {"other.lua", R"(local o = require "orch"
return o.pipeline "other" {
  triggers = { o.webhook { path = "/hooks/taken" } },
  o.node("n", function() return {} end),
}
)"}});
  std::string db = tmp.file("s.db");
  ServeProcess srv(dir, db);
  auto validate = [&](const std::string& name, const std::string& source) {
    return srv.request("POST", "/api/pipelines/" + name + "/validate", source,
                       {{"Content-Type", "text/x-lua"}});
  };
  auto defs = count(db, "select count(*) from definitions");

  auto r = validate("x", R"(local o = require "orch"
return o.pipeline "x" {
  triggers = { o.schedule "30 2 * * *", o.webhook { path = "/hooks/x", secret = "X" } },
  o.node("a", function() return {} end),
  o.node("b", function() return {} end),
}
)");
  INFO(show(r));
  REQUIRE(r.status == 200);
  json j = r.json_body();
  CHECK(j["valid"] == true);
  CHECK(j["name"] == "x");
  CHECK(j["nodes"] == 2);
  CHECK(j["triggers"].size() == 2);
  CHECK(j["triggers"][0]["type"] == "schedule");
  CHECK(j["triggers"][0]["cron"] == "30 2 * * *");

  // Each invalid source: 422, errors as file:line: message.
  struct Bad {
    std::string source;
    int line;
    std::vector<std::string> needles;
  };
  const std::string head = "local o = require \"orch\"\nreturn o.pipeline \"x\" {\n";
  for (const Bad& b : std::vector<Bad>{
           {head + "  o.node(\"a\", function( return {} end),\n}\n", 3, {}},
           {head + "  triggers = { o.schedule \"61 * * * *\" },\n  o.node(\"a\", function() "
                   "end),\n}\n",
            3,
            {"o.schedule", "61 * * * *", "minute: 61 is out of range"}},
           {head + "  triggers = { o.schedule { cron = \"0 25 * * *\" } },\n  o.node(\"a\", "
                   "function() end),\n}\n",
            3,
            {"o.schedule", "hour: 25 is out of range"}},
           {head + "  triggers = {\n    o.schedule { cron = \"*/5 * * * *\", tz = "
                   "\"Mars/Olympus_Mons\" },\n  },\n  o.node(\"a\", function() end),\n}\n",
            4,
            {"o.schedule", "unknown time zone 'Mars/Olympus_Mons'"}},
           {head + "  triggers = { o.schedule { cron = \"@daily\", missed = \"sometimes\" } },\n  "
                   "o.node(\"a\", function() end),\n}\n",
            3,
            {"missed"}},
           {head + "  triggers = { o.webhook { path = \"/hooks/x\", sekret = \"X\" } },\n  "
                   "o.node(\"a\", function() end),\n}\n",
            3,
            {"o.webhook", "unknown option 'sekret'"}},
           {head + "  triggers = { o.webhook { path = \"hooks/x\" } },\n  o.node(\"a\", function() "
                   "end),\n}\n",
            3,
            {"o.webhook", "path"}},
           {head + "  triggers = { o.webhook { path = \"/hooks/x\", input = \"headers\" } },\n  "
                   "o.node(\"a\", function() end),\n}\n",
            3,
            {"input"}},
       }) {
    r = validate("x", b.source);
    INFO(b.source << "\n-> " << show(r));
    CHECK(r.status == 422);
    j = r.json_body();
    CHECK(j["valid"] == false);
    REQUIRE(j["errors"].is_array());
    REQUIRE(!j["errors"].empty());
    json e = j["errors"][0];
    CHECK(has(e["file"].get<std::string>(), "x.lua"));
    CHECK(e["line"] == b.line);
    for (auto& n : b.needles) CHECK(has(e["message"].get<std::string>(), n));
  }
  // The server's own checks: reserved paths, a path another pipeline has.
  r = validate("x", head +
                        "  triggers = { o.webhook { path = \"/api/runs\" } },\n  o.node(\"a\", "
                        "function() end),\n}\n");
  CHECK(r.status == 422);
  CHECK(has(r.body, "reserved"));
  r = validate("x", head +
                        "  triggers = { o.webhook { path = \"/hooks/taken\" } },\n  o.node(\"a\", "
                        "function() end),\n}\n");
  CHECK(r.status == 422);
  CHECK(has(r.body, "already used by pipeline other"));
  // The owner of the path may keep it.
  r = validate("other", R"(local o = require "orch"
return o.pipeline "other" { triggers = { o.webhook { path = "/hooks/taken" } }, o.node("n", function() end) }
)");
  CHECK(r.status == 200);
  // No body: the pipeline's file.
  CHECK(srv.post("/api/pipelines/x/validate").status == 200);
  CHECK(srv.post("/api/pipelines/nope/validate").status == 404);
  // Nothing was stored or run.
  CHECK(count(db, "select count(*) from definitions") == defs);
  CHECK(count(db, "select count(*) from runs") == 0);
  CHECK(srv.stop() == 0);
}

// --- cron schedules, in-process with an injected clock -----------------------------------------

namespace {

int64_t utc_ms(int y, int mo, int d, int h, int mi, int s) {
  struct tm tm {};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = s;
  return static_cast<int64_t>(timegm(&tm)) * 1000;
}

// Runs the loop without blocking until cond() holds, at most timeout_ms.
bool pump_until(Loop& loop, const std::function<bool()>& cond, int timeout_ms = 5000) {
  int64_t deadline = mono_ms() + timeout_ms;
  for (;;) {
    uv_run(loop.get(), UV_RUN_NOWAIT);
    if (cond()) return true;
    if (mono_ms() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

void pump_for(Loop& loop, int ms) {
  pump_until(
      loop, [] { return false; }, ms);
}

}  // namespace

TEST_CASE("serve: cron schedules fire once per fire time, honour missed and restarts",
          "[serve][cron]") {
  TempDir tmp;
  std::string dir = pipeline_dir(tmp, {{"five.lua", R"(local o = require "orch"
return o.pipeline "five" {
  triggers = { o.schedule "*/5 * * * *" },
  o.node("n", function(ctx) return { input = ctx.input } end),
}
)"},
                                       {"hourly.lua", R"(local o = require "orch"
return o.pipeline "hourly" {
  triggers = { o.schedule { cron = "0 * * * *", missed = "run_once", input = { k = "v" } } },
  o.node("n", function(ctx) return { input = ctx.input } end),
}
)"},
                                       {"paris.lua", R"(local o = require "orch"
return o.pipeline "paris" {
  triggers = { o.schedule { cron = "30 2 * * *", tz = "Europe/Paris" } },
  o.node("n", function() return {} end),
}
)"},
                                       // Two schedules with one cron expression: each fires.
                                       {"regions.lua", R"(local o = require "orch"
return o.pipeline "regions" {
  triggers = {
    o.schedule { cron = "*/5 * * * *", input = { region = "eu" } },
    o.schedule { cron = "*/5 * * * *", input = { region = "us" } },
  },
  o.node("n", function(ctx) return { region = ctx.input.region } end),
}
)"}});
  std::string db = tmp.file("cron.db");
  std::string err;
  auto store = Store::open(db, StoreOptions{}, &err);
  INFO(err);
  REQUIRE(store);
  Loop loop;
  int64_t clock = utc_ms(2026, 3, 1, 1, 22, 0);
  ServeOptions so;
  so.dir = dir;
  so.port = 0;
  so.clock = [&clock] { return clock; };
  so.log = nullptr;
  auto server = std::make_unique<Server>(&loop, store.get(), so);
  REQUIRE(server->start(&err));
  REQUIRE(server->schedules().size() == 5);

  auto runs = [&](const std::string& pipeline) {
    return poll_int(db, "select count(*) from runs where pipeline=" + sql_literal(pipeline), 0);
  };
  auto unfinished = [&] {
    return poll_int(db, "select count(*) from runs where status not in ('succeeded','failed')", 0);
  };
  auto settle = [&] { REQUIRE(pump_until(loop, [&] { return unfinished() == 0; })); };
  auto advance = [&](int64_t to) {
    clock = to;
    server->check_schedules();
    pump_for(loop, 20);
    settle();
  };
  pump_for(loop, 20);
  // Never fired before: nothing is backfilled.
  CHECK(poll_int(db, "select count(*) from runs", 0) == 0);
  CHECK(poll_int(db, "select count(*) from schedule_fires", 0) == 5);

  advance(utc_ms(2026, 3, 1, 1, 25, 30));  // 01:25 is due (30 s ago: on time)
  CHECK(runs("five") == 1);
  CHECK(runs("hourly") == 0);
  CHECK(runs("paris") == 0);
  CHECK(runs("regions") == 2);
  CHECK(query_str(db,
                  "select group_concat(input, ' ') from (select input from runs where "
                  "pipeline='regions' order by input)") == R"({"region":"eu"} {"region":"us"})");
  advance(utc_ms(2026, 3, 1, 1, 25, 50));  // nothing new
  CHECK(runs("five") == 1);
  // 01:30 UTC is 02:30 in Paris (UTC+1 in March before the change).
  advance(utc_ms(2026, 3, 1, 1, 30, 20));
  CHECK(runs("five") == 2);
  CHECK(runs("paris") == 1);
  CHECK(runs("regions") == 4);
  std::string paris_key = query_str(db, "select idempotency_key from runs where pipeline='paris'");
  CHECK(paris_key.rfind("schedule:", 0) == 0);
  CHECK(has(paris_key, "30 2 * * *"));
  CHECK(has(paris_key, "@2026-03-01T01:30:00.000Z"));
  advance(utc_ms(2026, 3, 1, 1, 30, 40));
  CHECK(runs("five") == 2);
  CHECK(runs("paris") == 1);

  // A long gap (the clock jumps 3.5 hours): "skip" starts nothing for fire times that are over
  // a minute old; "run_once" starts one run, for the latest.
  advance(utc_ms(2026, 3, 1, 5, 3, 0));
  CHECK(runs("five") == 2);
  CHECK(runs("hourly") == 1);
  CHECK(has(query_str(db, "select idempotency_key from runs where pipeline='hourly'"),
            "@2026-03-01T05:00:00.000Z"));
  CHECK(runs("regions") == 4);
  CHECK(query_str(db, "select input from runs where pipeline='hourly'") == R"({"k":"v"})");
  CHECK(runs("paris") == 1);

  // Every scheduled run: source 'schedule', a distinct idempotency key, succeeded.
  CHECK(poll_int(db,
                 "select count(*) from runs where source<>'schedule' or idempotency_key is null "
                 "or idempotency_key='' or status<>'succeeded'",
                 -1) == 0);
  CHECK(poll_int(db, "select count(distinct pipeline || char(10) || idempotency_key) from runs",
                 0) == poll_int(db, "select count(*) from runs", -1));
  auto five_keys =
      query(db, "select idempotency_key from runs where pipeline='five' order by created_at");
  REQUIRE(five_keys.size() == 2);
  CHECK(has(five_keys[0][0], "@2026-03-01T01:25:00.000Z"));
  CHECK(has(five_keys[1][0], "@2026-03-01T01:30:00.000Z"));

  // Restart: a new server on the same store, later, picks up from schedule_fires.
  auto restart = [&](int64_t at) {
    bool closed = false;
    server->shutdown([&closed] { closed = true; });
    REQUIRE(pump_until(loop, [&] { return closed; }));
    server.reset();
    pump_for(loop, 10);
    clock = at;
    server = std::make_unique<Server>(&loop, store.get(), so);
    REQUIRE(server->start(&err));
    pump_for(loop, 20);
    settle();
  };
  restart(utc_ms(2026, 3, 1, 5, 3, 10));  // the same fire times: nothing again
  CHECK(poll_int(db, "select count(*) from runs", 0) == 8);
  restart(utc_ms(2026, 3, 1, 5, 5, 20));  // 05:05 is due: it fires once
  CHECK(runs("five") == 3);
  CHECK(runs("regions") == 6);
  CHECK(runs("hourly") == 1);
  restart(utc_ms(2026, 3, 1, 5, 5, 40));
  CHECK(runs("five") == 3);
  CHECK(runs("regions") == 6);
  // Even when schedule_fires lags (another server on the store fired it), the idempotency key
  // keeps it to one run per fire time.
  {
    bool closed = false;
    server->shutdown([&closed] { closed = true; });
    REQUIRE(pump_until(loop, [&] { return closed; }));
    server.reset();
    pump_for(loop, 10);
  }
  store->commit();
  {
    auto other = Store::open(db, StoreOptions{}, &err);
    REQUIRE(other);
    other->set_schedule_fire(
        "five", query_str(db, "select schedule from schedule_fires where pipeline='five'"),
        utc_ms(2026, 3, 1, 5, 4, 0));
    other->commit();
  }
  clock = utc_ms(2026, 3, 1, 5, 5, 50);
  server = std::make_unique<Server>(&loop, store.get(), so);
  REQUIRE(server->start(&err));
  pump_for(loop, 20);
  settle();
  CHECK(runs("five") == 3);
  CHECK(server->schedules().size() == 5);
  for (auto& s : server->schedules()) {
    INFO(s.pipeline);
    CHECK(s.next_fire > clock);
  }

  bool closed = false;
  server->shutdown([&closed] { closed = true; });
  REQUIRE(pump_until(loop, [&] { return closed; }));
  server.reset();
  pump_for(loop, 10);
  store.reset();
  auto leaked = loop.close();
  std::string names;
  for (auto& n : leaked) names += n + " ";
  INFO("handles left open: " << names);
  CHECK(leaked.empty());
}

TEST_CASE("serve: shutdown reaps the child processes of the runs it lets go (in-process)",
          "[serve]") {
  TempDir tmp;
  // A schedule (driven by the fake clock) starts a run whose node waits on a child process.
  std::string dir = pipeline_dir(tmp, {{"child.lua", R"(local o = require "orch"
return o.pipeline "child" {
  triggers = { o.schedule "*/5 * * * *" },
  o.node("wait", function() o.exec { "sleep", "29.25" } return {} end),
}
)"}});
  std::string db = tmp.file("p.db");
  std::string err;
  auto store = Store::open(db, StoreOptions{}, &err);
  REQUIRE(store);
  auto sleeping = [] {
    return run_cmd({"pgrep", "-f", "^sleep 29.25$"}, {}, "", 10).exit_code == 0;
  };
  {
    Loop loop;
    int64_t clock = utc_ms(2026, 3, 1, 1, 22, 0);
    ServeOptions so;
    so.dir = dir;
    so.port = 0;
    so.clock = [&clock] { return clock; };
    so.log = nullptr;
    so.grace_ms = 100;
    auto server = std::make_unique<Server>(&loop, store.get(), so);
    REQUIRE(server->start(&err));
    clock = utc_ms(2026, 3, 1, 1, 25, 10);
    server->check_schedules();
    REQUIRE(pump_until(loop, [&] { return server->scheduler().processes()->size() == 1; }));
    REQUIRE(pump_until(loop, sleeping));
    bool closed = false;
    size_t processes_at_done = 99;
    server->shutdown([&] {
      closed = true;
      processes_at_done = server->scheduler().processes()->size();
    });
    int64_t t0 = mono_ms();
    REQUIRE(pump_until(loop, [&] { return closed; }));
    // The grace (100 ms), then the kill: not the 2 s kill_grace of the detached process.
    CHECK(mono_ms() - t0 < 1500);
    // "done is called once everything is closed": the child was killed and reaped.
    CHECK(processes_at_done == 0);
    server.reset();
    auto leaked = loop.close();
    std::string names;
    for (auto& n : leaked) names += n + " ";
    INFO("handles left open: " << names);
    CHECK(leaked.empty());
  }
  CHECK(eventually([&] { return !sleeping(); }, 3000));
  CHECK(query_str(db, "select status from runs") == "running");  // left for the next start
}
