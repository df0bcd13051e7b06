// orchrun serve end to end: the real binary as a child process on 127.0.0.1:0 with a temporary
// database, driven by real HTTP clients (tests/serve_util.h), checked through the API and in
// the store. The API as a whole (server/api.cc): the token rules, the route table, malformed
// requests and limits.
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
#include "server/api.h"
#include "server/routes.h"
#include "server/server.h"
#include "store/store.h"
#include "test_util.h"

using namespace orch;
using namespace orch::test;
using namespace orch::test::serve;

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

// --- 13. the route table ----------------------------------------------------------------------

TEST_CASE("serve: the API's route table matches paths, methods and path parameters",
          "[serve][routes]") {
  auto routes = api_routes();
  auto find = [&](const std::string& method, const std::string& path) {
    return match_route(routes, method, path);
  };
  auto m = find("POST", "/api/runs/01ABC/approvals/deploy");
  REQUIRE(m.route);
  CHECK(std::string(m.route->pattern) == "/api/runs/{id}/approvals/{node...}");
  CHECK(m.route->auth == RouteAuth::kWrite);
  CHECK(m.params.get("id") == "01ABC");
  CHECK(m.params.get("node") == "deploy");
  CHECK(m.params.get("nope").empty());
  // The rest of the path, slashes included (a gate inside a group), or empty.
  m = find("POST", "/api/runs/01ABC/approvals/group/deploy");
  REQUIRE(m.route);
  CHECK(m.params.get("node") == "group/deploy");
  m = find("POST", "/api/runs/01ABC/approvals/");
  REQUIRE(m.route);
  CHECK(m.params.get("node").empty());
  CHECK_FALSE(find("POST", "/api/runs/01ABC/approvals").route);
  CHECK(find("POST", "/api/runs/01ABC/approvals").path_routes.empty());
  // GET routes answer HEAD; reads and writes have their auth.
  m = find("HEAD", "/api/runs/01ABC");
  REQUIRE(m.route);
  CHECK(m.route->auth == RouteAuth::kRead);
  CHECK(m.params.get("id") == "01ABC");
  REQUIRE(find("GET", "/healthz").route);
  CHECK(find("GET", "/healthz").route->auth == RouteAuth::kNone);
  CHECK(std::string(find("GET", "/api/runs.csv").route->pattern) == "/api/runs.csv");
  // A known path with another method: no route, the path's routes (for 405 and Allow).
  m = find("GET", "/api/runs/01ABC/cancel");
  CHECK_FALSE(m.route);
  REQUIRE(m.path_routes.size() == 1);
  CHECK(allowed_methods(m.path_routes) == "POST");
  CHECK(allowed_methods(find("DELETE", "/api/pipelines/x").path_routes) == "GET");
  // Unknown paths: nothing at all (404).
  for (const char* path : {"/", "/api", "/api/", "/api/nope", "/api/runs/X/bogus",
                           "/api/runs/X/cancel/more", "/healthz/", "/api//runs", "/metrics/x"}) {
    INFO(path);
    auto u = find("GET", path);
    CHECK_FALSE(u.route);
    CHECK(u.path_routes.empty());
  }
  // Every pattern of the table matches itself, with its parameters taken as values.
  for (const Route& r : routes) {
    INFO(r.pattern);
    RouteParams params;
    CHECK(match_pattern(r.pattern, r.pattern, &params));
  }
  RouteParams p;
  CHECK(match_pattern("/a/{x}/b", "/a//b", &p));
  CHECK(p.get("x").empty());
  CHECK(p.size() == 1);
  CHECK_FALSE(match_pattern("/a/{x}/b", "/a/1/b/", &p));
  CHECK_FALSE(match_pattern("/a/{x}", "/a", &p));
  CHECK(match_pattern("/a/{rest...}", "/a/1/2/3", &p));
  CHECK(p.get("rest") == "1/2/3");
}

TEST_CASE("serve: unknown paths are 404, wrong methods 405 with Allow, odd ids refused cleanly",
          "[serve][routes]") {
  TempDir tmp;
  std::string dir = pipeline_dir(tmp, {{"gate.lua", kGate}});
  std::string db = tmp.file("s.db");
  ServeProcess srv(dir, db);
  auto expect = [&](const HttpReply& r, int status, const std::string& code) {
    INFO(show(r));
    CHECK(r.status == status);
    CHECK(has(r.header("content-type"), "application/json"));
    CHECK(r.error_code() == code);
  };
  auto r = srv.post("/api/pipelines/gate/runs", "{}");
  INFO(show(r));
  REQUIRE(r.status == 202);
  std::string id = r.json_body()["run_id"];
  CHECK(srv.wait_run(id, "awaiting_approval")["status"] == "awaiting_approval");

  // Unknown paths, whatever the method.
  const std::vector<std::string> unknown = {"/api/nope",
                                            "/api/runs/" + id + "/bogus",
                                            "/api/runs/" + id + "/cancel/more",
                                            "/api",
                                            "/api/",
                                            "/nope",
                                            "/healthz/"};
  for (const char* method : {"GET", "POST", "DELETE"}) {
    for (const std::string& path : unknown) {
      auto u = srv.request(method, path, method == std::string("GET") ? "" : "{}");
      expect(u, 404, "not_found");
      CHECK(u.json_body()["error"]["message"] == "no route " + std::string(method) + " " + path);
    }
  }
  // A known path with a path parameter and the wrong method: 405 with Allow, nothing done.
  struct Wrong {
    const char* method;
    std::string path, allow;
  };
  for (const Wrong& w : std::vector<Wrong>{{"GET", "/api/runs/" + id + "/cancel", "POST"},
                                           {"DELETE", "/api/runs/" + id, "GET"},
                                           {"PUT", "/api/runs/" + id + "/retry", "POST"},
                                           {"GET", "/api/runs/" + id + "/approvals/deploy", "POST"},
                                           {"POST", "/api/pipelines/gate", "GET"},
                                           {"GET", "/api/pipelines/gate/validate", "POST"},
                                           {"POST", "/api/events", "GET"},
                                           {"POST", "/metrics", "GET"}}) {
    INFO(w.method << " " << w.path);
    auto m = srv.request(w.method, w.path, "{}");
    expect(m, 405, "method_not_allowed");
    CHECK(m.header("allow") == w.allow);
    CHECK(m.json_body()["error"]["message"] ==
          std::string(w.method) + " is not allowed on " + w.path + "; use " + w.allow);
  }
  CHECK(srv.get("/api/runs/" + id).json_body()["status"] == "awaiting_approval");

  // Odd ids in a path parameter: 404 with a JSON error (invalid UTF-8 replaced), no match by
  // prefix, nothing changed.
  std::string decide = R"({"decision":"approve","approver":"alice"})";
  for (std::string odd : {std::string("%FF%FE"), std::string("..%2F..%2Fetc"),
                          std::string("x'%3B%20drop%20table%20runs%3B--"), std::string("%00"),
                          std::string(4000, 'Z'), id + "Z", std::string("%25s%25n")}) {
    INFO(odd.substr(0, 40));
    auto g = srv.get("/api/runs/" + odd);
    CHECK((g.status == 404 || g.status == 400));
    CHECK(!g.error_code().empty());
    CHECK(has(g.header("content-type"), "application/json"));
    auto c = srv.post("/api/runs/" + odd + "/cancel", "{}");
    CHECK((c.status == 404 || c.status == 400));
    CHECK(!c.error_code().empty());
    auto a = srv.post("/api/runs/" + odd + "/approvals/deploy", decide);
    CHECK((a.status == 404 || a.status == 400));
    CHECK(!a.error_code().empty());
  }
  // A gate path with no gate in it.
  expect(srv.post("/api/runs/" + id + "/approvals/", decide), 404, "not_found");
  CHECK(srv.get("/api/runs/" + id).json_body()["status"] == "awaiting_approval");
  CHECK(count(db, "select count(*) from runs") == 1);
  CHECK(count(db, "select count(*) from approvals where decided_by is not null") == 0);
  auto h = srv.get("/healthz");
  CHECK(h.status == 200);
  CHECK(srv.stop() == 0);

  // With a token, a route's auth comes before its method: 401 without the token, 405 with it.
  const std::string token = "tok-routes-0123456789";
  ServeProcess tsrv(dir, tmp.file("t.db"), {}, {"ORCHRUN_TOKEN=" + token});
  expect(tsrv.request("GET", "/api/runs/" + id + "/cancel"), 401, "unauthorized");
  auto t = tsrv.request("GET", "/api/runs/" + id + "/cancel", "",
                        {{"Authorization", "Bearer " + token}});
  expect(t, 405, "method_not_allowed");
  CHECK(t.header("allow") == "POST");
  // A read on loopback needs no token, whatever the method: 405 at once.
  t = tsrv.request("DELETE", "/api/runs/" + id);
  expect(t, 405, "method_not_allowed");
  CHECK(t.header("allow") == "GET");
  expect(tsrv.request("DELETE", "/api/nope"), 404, "not_found");
  CHECK(tsrv.stop() == 0);
}
