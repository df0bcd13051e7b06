// o.http.request from pipelines, in-process (real loop, store and scheduler) against a real
// server on 127.0.0.1: what is sent, what comes back, failures as nil/message/code, redirects,
// a hundred requests at once, node timeouts and cancels that abort transfers, and misuse.
#include <catch2/catch.hpp>
#include <chrono>
#include <thread>

#include "http_test_server.h"
#include "base/json_util.h"
#include "test_util.h"

using namespace orch;
using namespace orch::test;

namespace {

std::string input_with_url(const HttpTestServer& srv) {
  return dump_json(json{{"url", srv.url("")}});
}

json output(const RunSummary& s) {
  INFO("run: " << s.status << " " << s.error_type << " " << s.error_message);
  REQUIRE(s.status == "succeeded");
  std::string err;
  json j = parse_json(s.output_json, &err);
  INFO(s.output_json);
  REQUIRE(!j.is_discarded());
  return j;
}

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

template <typename F>
bool eventually(F cond) {
  for (int i = 0; i < 500; i++) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return cond();
}

}  // namespace

TEST_CASE("o.http.request: a GET with query and headers; the result's fields", "[http]") {
  HttpTestServer srv([](const HttpTestRequest& r) {
    return HttpTestResponse::json(200, R"({"answer":42,"list":[1,2]})")
        .header("X-Request-Id", "r-7");
  });
  Harness h;
  auto s = h.run(R"(
    local o = require "orch"
    return o.pipeline "get" {
      o.node("get", function(ctx)
        local res = o.http.request {
          url = ctx.input.url .. "/search",
          query = { q = "disk full & more", tag = { "a", "b" }, n = 5, on = true },
          headers = { ["X-Trace"] = "t-1", Accept = "application/json" },
        }
        return { status = res.status, ok = res.ok, rid = res.headers["x-request-id"],
                 ct = res.headers["content-type"], body = res.body, answer = res.json.answer,
                 second = res.json.list[2], url = res.url,
                 has_duration = type(res.duration_ms) == "number" }
      end),
    })",
                 input_with_url(srv));
  json out = output(s);
  CHECK(out.at("status") == 200);
  CHECK(out.at("ok") == true);
  CHECK(out.at("rid") == "r-7");
  CHECK(out.at("ct") == "application/json");
  CHECK(out.at("answer") == 42);
  CHECK(out.at("second") == 2);
  CHECK(out.at("has_duration") == true);
  auto reqs = srv.requests();
  REQUIRE(reqs.size() == 1);
  CHECK(reqs[0].method == "GET");
  CHECK(reqs[0].path == "/search");
  // Keys sorted, values %-encoded, lists repeated.
  CHECK(reqs[0].query == "n=5&on=true&q=disk%20full%20%26%20more&tag=a&tag=b");
  CHECK(reqs[0].param("q") == "disk full & more");
  CHECK(reqs[0].header("x-trace") == "t-1");
  CHECK(reqs[0].header("accept") == "application/json");
  CHECK(out.at("url") == srv.url("/search?" + reqs[0].query));
  CHECK(h.close().empty());
}

TEST_CASE("o.http.request: json and body requests; the method defaults to POST with a body",
          "[http]") {
  HttpTestServer srv([](const HttpTestRequest& r) {
    // Echoes what arrived, as JSON with a vendor type (decoded too).
    json echo{{"method", r.method}, {"ct", r.header("content-type")}, {"body", r.body}};
    return HttpTestResponse::json(201, dump_json(echo))
        .header("Content-Type", "application/vnd.echo+json");
  });
  Harness h;
  auto s = h.run(R"(
    local o = require "orch"
    return o.pipeline "post" {
      o.node("send", function(ctx)
        local u = ctx.input.url
        local a = o.http.post(u .. "/items", { json = { name = "disk", n = 3, tags = o.json.array { "x" } } })
        local b = o.http.request { url = u .. "/raw", body = "a=1&b=2",
                                   headers = { ["Content-Type"] = "application/x-www-form-urlencoded" } }
        local c = o.http.put(u .. "/typed", { json = { v = true },
                                             headers = { ["content-type"] = "application/merge-patch+json" } })
        local d = o.http.request { url = u .. "/patch", method = "patch", body = "p" }
        local e = o.http.delete(u .. "/items/1")
        return { a = a.json, a_status = a.status, b = b.json, c = c.json, d = d.json, e = e.json }
      end),
    })",
                 input_with_url(srv));
  json out = output(s);
  CHECK(out.at("a_status") == 201);
  CHECK(out.at("a").at("method") == "POST");
  CHECK(out.at("a").at("ct") == "application/json");
  json sent = parse_json(out.at("a").at("body").get<std::string>(), nullptr);
  CHECK(sent == json{{"name", "disk"}, {"n", 3}, {"tags", {"x"}}});
  CHECK(out.at("b").at("method") == "POST");
  CHECK(out.at("b").at("body") == "a=1&b=2");
  CHECK(out.at("b").at("ct") == "application/x-www-form-urlencoded");
  // A content type the caller gave is kept.
  CHECK(out.at("c").at("method") == "PUT");
  CHECK(out.at("c").at("ct") == "application/merge-patch+json");
  CHECK(out.at("c").at("body") == R"({"v":true})");
  CHECK(out.at("d").at("method") == "PATCH");
  CHECK(out.at("d").at("body") == "p");
  CHECK(out.at("e").at("method") == "DELETE");
  CHECK(h.close().empty());
}

TEST_CASE(
    "o.http.request: 404 and 500 are results; refused, timeout and too large are "
    "nil, message, code",
    "[http]") {
  HttpTestServer srv([](const HttpTestRequest& r) {
    if (r.path == "/missing") return HttpTestResponse::text(404, "no such thing");
    if (r.path == "/broken") return HttpTestResponse::json(500, R"({"error":"db down"})");
    if (r.path == "/slow") return HttpTestResponse::text(200, "late").after_ms(30000);
    if (r.path == "/big") return HttpTestResponse::text(200, std::string(4096, 'b'));
    return HttpTestResponse::json(200, "not json at all");
  });
  // A port where nothing listens: the server's own, once it is stopped.
  std::string refused_url;
  {
    HttpTestServer gone;
    refused_url = gone.url("/");
  }
  Harness h;
  auto s = h.run(R"(
    local o = require "orch"
    local function try(req)
      local res, err, code = o.http.request(req)
      if res then return { status = res.status, ok = res.ok, body = res.body, json = res.json } end
      return { failed = res == nil, err = err, code = code }
    end
    return o.pipeline "errors" {
      o.node("all", function(ctx)
        local u = ctx.input.url
        return {
          missing = try { url = u .. "/missing" },
          broken = try { url = u .. "/broken" },
          refused = try { url = ctx.input.refused },
          slow = try { url = u .. "/slow", timeout = "200ms" },
          slow_number = try { url = u .. "/slow", timeout = 0.2 },
          big = try { url = u .. "/big", max_body = 1000 },
          bad_json = try { url = u .. "/text" },
        }
      end),
    })",
                 dump_json(json{{"url", srv.url("")}, {"refused", refused_url}}));
  json out = output(s);
  CHECK(out.at("missing").at("status") == 404);
  CHECK(out.at("missing").at("ok") == false);
  CHECK(out.at("missing").at("body") == "no such thing");
  CHECK(out.at("broken").at("status") == 500);
  CHECK(out.at("broken").at("json").at("error") == "db down");
  CHECK(out.at("refused").at("code") == "connect");
  CHECK(contains(out.at("refused").at("err"), "GET http://127.0.0.1:"));
  CHECK(out.at("slow").at("code") == "timeout");
  CHECK(out.at("slow_number").at("code") == "timeout");
  CHECK(out.at("big").at("code") == "too_large");
  CHECK(contains(out.at("big").at("err"), "max_body"));
  // A JSON content type with a body that does not parse: no json field, the body is there.
  CHECK(out.at("bad_json").at("body") == "not json at all");
  CHECK_FALSE(out.at("bad_json").contains("json"));
  CHECK(h.close().empty());
}

TEST_CASE("o.http.request: redirects are followed only when asked", "[http]") {
  HttpTestServer srv([](const HttpTestRequest& r) {
    if (r.path == "/old")
      return HttpTestResponse::text(301, "").header("Location", "/new?from=old");
    return HttpTestResponse::text(200, "new place");
  });
  Harness h;
  auto s = h.run(R"(
    local o = require "orch"
    return o.pipeline "redirects" {
      o.node("r", function(ctx)
        local a = o.http.get(ctx.input.url .. "/old")
        local b = o.http.get(ctx.input.url .. "/old", { follow_redirects = true })
        return { a = a.status, location = a.headers.location, b = b.status, body = b.body,
                 url = b.url }
      end),
    })",
                 input_with_url(srv));
  json out = output(s);
  CHECK(out.at("a") == 301);
  CHECK(out.at("location") == "/new?from=old");
  CHECK(out.at("b") == 200);
  CHECK(out.at("body") == "new place");
  CHECK(out.at("url") == srv.url("/new?from=old"));
  CHECK(srv.request_count() == 3);
  CHECK(h.close().empty());
}

TEST_CASE(
    "o.http.request: 100 parallel nodes have their requests in flight together and "
    "reuse their connections",
    "[http]") {
  HttpTestServer srv([](const HttpTestRequest& r) {
    return HttpTestResponse::json(200, R"({"i":)" + r.param("i") + "}").after_ms(200);
  });
  Harness h;
  auto s = h.run(R"(
    local o = require "orch"
    local branches = {}
    for i = 1, 100 do
      branches[i] = o.node("n" .. i, function(ctx)
        -- Twice: the second request reuses the first one's connection.
        for _ = 1, 2 do
          local res, err = o.http.get(ctx.input.url .. "/work", { query = { i = i } })
          assert(res, err)
          assert(res.json.i == i, "wrong answer")
        end
        return { i = i }
      end)
    end
    return o.pipeline "fan" { o.parallel("all", branches) }
  )",
                 input_with_url(srv));
  INFO(s.error_message);
  CHECK(s.status == "succeeded");
  CHECK(s.nodes_succeeded == 100);
  CHECK(srv.request_count() == 200);
  INFO("max in flight at the server: " << srv.max_in_flight());
  CHECK(srv.max_in_flight() > 1);
  // The first wave ends together, before any node starts its second request: the connection
  // cache must keep them all rather than shrink with the number of transfers in flight.
  CHECK(srv.connections_accepted() <= 100);
  CHECK(h.close().empty());
}

TEST_CASE("o.http.request: sequential requests share kept-alive connections across nodes",
          "[http]") {
  HttpTestServer srv;
  Harness h;
  auto s = h.run(R"(
    local o = require "orch"
    return o.pipeline "reuse" {
      o.node("a", function(ctx)
        for i = 1, 5 do assert(o.http.get(ctx.input.url .. "/a").ok) end
        return {}
      end),
      o.node("b", function(ctx) assert(o.http.get(ctx.input.url .. "/b").ok) return {} end),
    })",
                 input_with_url(srv));
  CHECK(s.status == "succeeded");
  CHECK(srv.request_count() == 6);
  CHECK(srv.connections_accepted() == 1);
  CHECK(h.close().empty());
}

TEST_CASE("o.http.request: a node timeout or a cancel aborts the transfer", "[http]") {
  HttpTestServer srv([](const HttpTestRequest& r) {
    if (r.path == "/fast") return HttpTestResponse::text(200, "fast");
    return HttpTestResponse::text(200, "late").after_ms(30000);
  });
  Harness h;
  auto s = h.run(R"(
    local o = require "orch"
    return o.pipeline "node-timeout" {
      o.node("slow", function(ctx)
        return o.http.get(ctx.input.url .. "/slow", { timeout = "60s" })
      end, { timeout = "300ms" }),
    })",
                 input_with_url(srv));
  CHECK(s.status == "failed");
  CHECK(s.error_type == "timeout");
  CHECK(srv.request_count() == 1);
  // The client hung up instead of leaving the request running.
  CHECK(eventually([&] { return srv.open_connections() == 0; }));

  // join = "any": the winner cancels the loser's request.
  auto any = h.run(R"(
    local o = require "orch"
    return o.pipeline "race" {
      o.parallel("race", {
        o.node("fast", function(ctx) o.sleep("100ms") return { body = o.http.get(ctx.input.url .. "/fast").body } end),
        o.node("slow", function(ctx) return o.http.get(ctx.input.url .. "/slow") end),
      }, { join = "any" }),
    })",
                   input_with_url(srv));
  CHECK(any.status == "succeeded");
  CHECK(any.nodes_cancelled == 1);
  CHECK(srv.request_count() == 3);
  CHECK(eventually([&] { return srv.open_connections() <= 1; }));  // the kept-alive one at most
  CHECK(h.close().empty());
}

TEST_CASE("o.http.request: misuse raises a message naming the field", "[http]") {
  Harness h;
  auto s = h.run(R"(
    local o = require "orch"
    local function msg(f, ...)
      local ok, e = pcall(f, ...)
      return ok and "no error" or tostring(e)
    end
    return o.pipeline "misuse" {
      o.node("m", function(ctx)
        local u = "http://127.0.0.1:1/"
        return {
          unknown = msg(o.http.request, { url = u, timout = "1s" }),
          both = msg(o.http.request, { url = u, body = "x", json = {} }),
          no_url = msg(o.http.request, {}),
          ftp = msg(o.http.request, { url = "ftp://example/" }),
          space = msg(o.http.request, { url = "http://127.0.0.1:1/a b" }),
          timeout = msg(o.http.request, { url = u, timeout = "soon" }),
          zero = msg(o.http.request, { url = u, timeout = 0 }),
          header = msg(o.http.request, { url = u, headers = { ["X-A"] = "a\r\nInjected: 1" } }),
          header_type = msg(o.http.request, { url = u, headers = { ["X-A"] = {} } }),
          query = msg(o.http.request, { url = u, query = { a = function() end } }),
          body_type = msg(o.http.request, { url = u, body = { 1 } }),
          json_fn = msg(o.http.request, { url = u, json = { f = print } }),
          method = msg(o.http.request, { url = u, method = "GET /x" }),
          redirects = msg(o.http.request, { url = u, follow_redirects = "yes" }),
          max_body = msg(o.http.request, { url = u, max_body = -1 }),
          not_table = msg(o.http.request, u),
          get_url = msg(o.http.get, 42),
          get_opts = msg(o.http.get, u, { url = u }),
        }
      end),
    })");
  json out = output(s);
  auto m = [&](const char* k) { return out.at(k).get<std::string>(); };
  INFO(out.dump(2));
  CHECK(contains(m("unknown"),
                 "o.http.request: unknown option 'timout' (known: method, url, "
                 "headers, query, body, json, timeout, follow_redirects, max_body)"));
  CHECK(contains(m("unknown"), "test.lua:"));  // the pipeline author's line
  CHECK(contains(m("both"), "'body' and 'json' cannot be used together"));
  CHECK(contains(m("no_url"), "'url' is required"));
  CHECK(contains(m("ftp"), "'url' must start with http:// or https://"));
  CHECK(contains(m("space"), "'url' contains spaces"));
  CHECK(contains(m("timeout"), "'timeout':"));
  CHECK(contains(m("zero"), "'timeout': must be more than 0"));
  CHECK(contains(m("header"), "header 'X-A' contains a control character"));
  CHECK(contains(m("header_type"), "header 'X-A' must be a string"));
  CHECK(contains(m("query"), "query parameter 'a'"));
  CHECK(contains(m("body_type"), "'body' must be a string"));
  CHECK(contains(m("json_fn"), "'json':"));
  CHECK(contains(m("method"), "'method' must be a word"));
  CHECK(contains(m("redirects"), "'follow_redirects' must be a boolean"));
  CHECK(contains(m("max_body"), "'max_body' must be a whole number"));
  CHECK(contains(m("not_table"), "o.http.request expects a table"));
  CHECK(contains(m("get_url"), "o.http.get expects a URL string"));
  CHECK(contains(m("get_opts"), "o.http.get: give the URL as the first argument"));

  // Outside a node body (while the file loads) it raises too.
  auto diags = Harness::diagnose(R"(
    local o = require "orch"
    o.http.get("http://127.0.0.1:1/")
    return o.pipeline "p" { o.node("a", function() return {} end) })");
  REQUIRE(diags.size() == 1);
  CHECK(contains(diags[0].str(), "can only be called inside a node body"));
  CHECK(h.close().empty());
}
