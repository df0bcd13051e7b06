// The real orchrun binary making HTTP requests: examples/http.lua against a server on 127.0.0.1.
#include <catch2/catch.hpp>

#include "http_test_server.h"
#include "base/json_util.h"
#include "test_util.h"

using namespace orch;
using namespace orch::test;

TEST_CASE("orchrun runs examples/http.lua against a local server", "[http][cli]") {
  HttpTestServer srv([](const HttpTestRequest& r) {
    if (r.method == "GET") return HttpTestResponse::json(200, R"({"hits":3})");
    // POST: answer with what arrived.
    return HttpTestResponse::json(202, dump_json(json{{"got", parse_json(r.body, nullptr)}}));
  });
  TempDir tmp;
  std::string db = tmp.file("http.db");
  std::string input = dump_json(json{{"url", srv.url("/api")}});
  auto r = orchrun({source_dir() + "/examples/http.lua", "--json", "--input", input}, db);
  INFO("stdout:\n" << r.out << "\nstderr:\n" << r.err);
  REQUIRE(r.exit_code == 0);
  json sum = parse_json(r.out, nullptr);
  REQUIRE(!sum.is_discarded());
  CHECK(sum.at("status") == "succeeded");
  CHECK(sum.at("nodes_succeeded") == 3);
  std::string run_id = sum.at("run_id");
  json out = sum.at("output");
  CHECK(out.at("status") == 202);
  CHECK(out.at("answer").at("got").at("event") == "demo");
  CHECK(out.at("answer").at("got").at("previous_status") == 200);

  auto reqs = srv.requests();
  REQUIRE(reqs.size() == 2);
  CHECK(reqs[0].method == "GET");
  CHECK(reqs[0].path == "/api");
  CHECK(reqs[0].param("q") == "disk full");
  CHECK(reqs[0].param("limit") == "5");
  CHECK(reqs[0].header("accept") == "application/json");
  CHECK(reqs[1].method == "POST");
  CHECK(reqs[1].header("content-type") == "application/json");
  json posted = parse_json(reqs[1].body, nullptr);
  CHECK(posted.at("run") == run_id);

  // The GET node's output is stored like any other.
  std::string get_out = query_str(db, "select output from node_runs where run_id='" + run_id +
                                          "' and node_id='has_url/call/get'");
  CHECK(parse_json(get_out, nullptr).at("content_type") == "application/json");
  // Without input, only the node that needs no network runs.
  auto bare = orchrun({source_dir() + "/examples/http.lua", "--json"}, db);
  INFO(bare.out << bare.err);
  REQUIRE(bare.exit_code == 0);
  json bs = parse_json(bare.out, nullptr);
  CHECK(bs.at("nodes_succeeded") == 1);
  CHECK(bs.at("nodes_skipped") == 2);
  CHECK(bs.at("output").at("code") == "connect");
  CHECK(srv.request_count() == 2);
}

namespace {

// A node that makes one request to a closed port and returns what o.http.request returned.
constexpr const char* kOneRequest = R"(
local o = require "orch"
return o.pipeline "one_request" {
  o.node("req", function(ctx, input)
    local r, msg, code = o.http.request { url = "http://127.0.0.1:1/x", timeout = "5s" }
    return { got_nil = r == nil, msg = msg, code = code }
  end),
}
)";

}  // namespace

TEST_CASE("orchrun loads libcurl at the first request, not at start", "[http][cli]") {
  TempDir tmp;
  std::string file = tmp.file("one.lua");
  write_file(file, kOneRequest);
  // The dynamic loader's trace names every library it opens.
  auto plain = orchrun({source_dir() + "/examples/hello.lua", "--quiet"}, tmp.file("a.db"),
                       {"LD_DEBUG=files"});
  INFO(plain.err);
  REQUIRE(plain.exit_code == 0);
  CHECK(plain.err.find("libuv") != std::string::npos);  // the trace is there
  CHECK(plain.err.find("libcurl") == std::string::npos);
  auto http = orchrun({file, "--quiet"}, tmp.file("b.db"), {"LD_DEBUG=files"});
  INFO(http.err);
  REQUIRE(http.exit_code == 0);
  CHECK(http.err.find("libcurl.so.4") != std::string::npos);
}

TEST_CASE("without libcurl.so.4, o.http.request returns nil, a message and \"error\"",
          "[http][cli]") {
  TempDir tmp;
  std::string file = tmp.file("one.lua");
  write_file(file, kOneRequest);
  // Hides libcurl in a private mount namespace (an empty file bound over it): needs root or
  // user namespaces; skipped where neither is available.
  std::string script =
      "lib=$(readlink -f \"$(ldconfig -p | sed -n 's/.*libcurl.so.4 .*=> //p' | "
      "head -n1)\") && mount --bind /dev/null \"$lib\" && exec \"$@\"";
  auto probe = run_cmd({"unshare", "-m", "sh", "-c", "mount --bind /dev/null /dev/null"});
  if (probe.exit_code != 0) {
    ORCH_SKIP("cannot make a private mount namespace (" << probe.err << ")");
  }
  auto r = run_cmd({"unshare", "-m", "sh", "-c", script, "sh", orchrun_bin(), file, "--json",
                    "--db", tmp.file("c.db")});
  INFO("stdout:\n" << r.out << "\nstderr:\n" << r.err);
  REQUIRE(r.exit_code == 0);
  json sum = parse_json(r.out, nullptr);
  REQUIRE(!sum.is_discarded());
  json out = sum.at("output");
  CHECK(out.at("got_nil") == true);
  CHECK(out.at("code") == "error");
  std::string msg = out.at("msg");
  CHECK(msg.rfind("HTTP is unavailable: cannot load libcurl.so.4: ", 0) == 0);
}
