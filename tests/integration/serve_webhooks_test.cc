// orchrun serve end to end: the real binary as a child process on 127.0.0.1:0 with a temporary
// database, driven by real HTTP clients (tests/serve_util.h), checked through the API and in
// the store. Webhooks (server/webhooks.cc): signatures, deduplication, trace context, routes
// across reloads.
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
#include "serve_util.h"
#include "server/server.h"
#include "store/store.h"
#include "test_util.h"

using namespace orch;
using namespace orch::test;
using namespace orch::test::serve;

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

TEST_CASE("serve: a webhook with auth = { bearer } or { basic } opens to that credential only",
          "[serve]") {
  TempDir tmp;
  std::string dir = pipeline_dir(tmp, {{"am.lua", R"(local o = require "orch"
return o.pipeline "am" {
  triggers = { o.webhook { path = "/hooks/am", auth = { bearer = "AM_TOKEN" } } },
  o.node("echo", function(ctx) return ctx.input end),
}
)"},
                                       {"gf.lua", R"(local o = require "orch"
return o.pipeline "gf" {
  triggers = { o.webhook { path = "/hooks/gf", auth = { basic = "GF_LOGIN" }, input = "envelope" } },
  o.node("echo", function(ctx) return ctx.input end),
}
)"},
                                       {"open.lua", R"(local o = require "orch"
return o.pipeline "open" {
  triggers = { o.webhook { path = "/hooks/open" } },
  o.node("echo", function(ctx) return ctx.input end),
}
)"}});
  std::string tf = tmp.file("api-token");
  const std::string api_token = "api-token-0123456789abcdef";
  write_file(tf, api_token + "\n");
  chmod(tf.c_str(), 0600);
  const std::string am_token = "am-bearer-token-0123456789";
  const std::string login = "grafana:s3cret:with:colons";
  std::string db = tmp.file("s.db");
  // Beyond loopback (0.0.0.0), where an unsigned webhook needs the API token.
  ServeProcess srv(dir, db, {"--token-file", tf},
                   {"ORCHRUN_SECRET_AM_TOKEN=" + am_token, "ORCHRUN_SECRET_GF_LOGIN=" + login},
                   "0.0.0.0:0");
  auto runs = [&] { return count(db, "select count(*) from runs"); };
  auto post = [&](const std::string& path, HeaderList h) {
    return srv.request("POST", path, R"({"status":"firing"})", h);
  };
  // The API needs the token here: the run's output is read from the store.
  auto output_of = [&](const std::string& id) {
    std::string where = "from runs where id=" + sql_literal(id);
    REQUIRE(eventually(
        [&] { return count(db, "select count(*) " + where + " and status='succeeded'") == 1; },
        8000));
    return json::parse(query_str(db, "select output " + where));
  };
  // Bearer: the right token starts a run; none, another scheme or a wrong one is 401 with
  // WWW-Authenticate, and nothing is stored.
  auto r = post("/hooks/am", {{"Authorization", "Bearer " + am_token}});
  INFO(show(r));
  REQUIRE(r.status == 202);
  CHECK(output_of(r.json_body()["run_id"])["status"] == "firing");
  CHECK(post("/hooks/am", {{"authorization", "bearer " + am_token}}).status == 202);  // any case
  int64_t before = runs();
  for (const HeaderList& h :
       {HeaderList{}, HeaderList{{"Authorization", "Bearer " + am_token + "x"}},
        HeaderList{{"Authorization", "Bearer"}}, HeaderList{{"Authorization", "Basic " + am_token}},
        HeaderList{{"Authorization", "Bearer " + api_token}}}) {
    r = post("/hooks/am", h);
    INFO(show(r));
    CHECK(r.status == 401);
    CHECK(r.error_code() == "unauthorized");
    CHECK(r.header("www-authenticate") == "Bearer realm=\"orchrun\"");
  }
  CHECK(runs() == before);
  // Basic: user:password, base64 as HTTP sends it (a password may hold colons).
  r = post("/hooks/gf", {{"Authorization", "Basic " + base64_encode(login)}});
  INFO(show(r));
  REQUIRE(r.status == 202);
  json env = output_of(r.json_body()["run_id"]);
  CHECK(env["body"]["status"] == "firing");
  CHECK(!env["headers"].contains("authorization"));  // the credential is not the run's input
  r = post("/hooks/gf", {{"Authorization", "Basic " + base64_encode("grafana:wrong")}});
  CHECK(r.status == 401);
  CHECK(r.header("www-authenticate") == "Basic realm=\"orchrun\"");
  CHECK(post("/hooks/gf", {{"Authorization", "Bearer " + am_token}}).status == 401);
  // The webhook's credential opens that webhook only: not another one, not the API.
  CHECK(post("/hooks/open", {{"Authorization", "Bearer " + am_token}}).status == 401);
  CHECK(srv.request("GET", "/api/runs", "", {{"Authorization", "Bearer " + am_token}}).status ==
        401);
  CHECK(post("/hooks/open", {{"Authorization", "Bearer " + api_token}}).status == 202);
  // Counted by outcome.
  std::string metrics =
      srv.request("GET", "/metrics", "", {{"Authorization", "Bearer " + api_token}}).body;
  CHECK(
      has(metrics, "orchrun_webhook_deliveries_total{pipeline=\"am\",outcome=\"unauthorized\"} 5"));
  CHECK(has(metrics, "orchrun_webhook_deliveries_total{pipeline=\"am\",outcome=\"accepted\"} 2"));
  CHECK(srv.stop() == 0);
}

TEST_CASE("serve: a webhook's auth that is not set or malformed is refused", "[serve]") {
  TempDir tmp;
  std::string dir = pipeline_dir(tmp, {{"am.lua", R"(local o = require "orch"
return o.pipeline "am" {
  triggers = { o.webhook { path = "/hooks/am", auth = { bearer = "AM_TOKEN" } } },
  o.node("echo", function(ctx) return ctx.input end),
}
)"}});
  std::string db = tmp.file("s.db");
  ServeProcess srv(dir, db);  // AM_TOKEN is not set
  auto r = srv.request("POST", "/hooks/am", "{}", {{"Authorization", "Bearer x"}});
  CHECK(r.status == 500);
  CHECK(r.error_code() == "secret_missing");
  CHECK(has(srv.log(), "webhook /hooks/am: secret AM_TOKEN is not set"));
  CHECK(count(db, "select count(*) from runs") == 0);
  CHECK(srv.stop() == 0);
  // Load-time errors name the file and line.
  const std::vector<std::pair<std::string, std::string>> bad = {
      {R"(auth = { token = "X" })",
       "am.lua:3: o.webhook: 'auth' is { bearer = \"SECRET_NAME\" } or { basic = \"SECRET_NAME\" } "
       "(the secret holds the token, or user:password), got 'token'"},
      {R"(auth = { bearer = "X", basic = "Y" })", "got 2 fields"},
      {R"(auth = "X")", "got string"},
      {R"(auth = { bearer = "not-a-name" })",
       "am.lua:3: o.webhook: auth.bearer is the NAME of a secret (letters, digits, _; set as "
       "ORCHRUN_SECRET_<NAME> or in the secrets file), got 'not-a-name'"},
      {R"(auth = { basic = 42 })", "auth.basic is the NAME of a secret"},
  };
  for (const auto& [opt, msg] : bad) {
    std::string src = std::string("local o = require \"orch\"\nreturn o.pipeline \"am\" {\n") +
                      "  triggers = { o.webhook { path = \"/hooks/am\", " + opt + " } },\n" +
                      "  o.node(\"echo\", function(ctx) return ctx.input end),\n}\n";
    write_file(tmp.file("am.lua"), src);
    auto v = orchrun({"validate", tmp.file("am.lua")}, "");
    INFO(opt << "\n" << v.err);
    CHECK(v.exit_code == 2);
    CHECK(has(v.err, msg));
  }
}
