// Hardening findings of the store, through the real binary: two servers on one database
// deduplicating the same webhook deliveries, and a disk that fills up under a server.
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "runtime/json_util.h"
#include "serve_util.h"
#include "test_util.h"

using namespace orch;
using namespace orch::test;

namespace {

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

std::string show(const HttpReply& r) {
  return std::to_string(r.status) + " " + r.body.substr(0, 400) +
         (r.error.empty() ? "" : " " + r.error);
}

}  // namespace

TEST_CASE("two servers on one store take each webhook delivery once and both stay up",
          "[hardening][store]") {
  TempDir d;
  std::string dir = d.file("p");
  mkdir(dir.c_str(), 0755);
  write_file(dir + "/x.lua", R"(local o = require "orch"
return o.pipeline "x" {
  triggers = { o.webhook { path = "/hooks/x", dedup_header = "X-Delivery", input = "envelope" } },
  o.node("n", function(ctx) return { ok = true } end),
}
)");
  const std::string db = d.file("s.db");
  ServeProcess a(dir, db);
  ServeProcess b(dir, db);
  constexpr int kDeliveries = 50;
  // Each delivery id is sent to both servers at once, from two threads.
  std::vector<HttpReply> from_a(kDeliveries), from_b(kDeliveries);
  for (int i = 0; i < kDeliveries; i++) {
    std::string id = "d-" + std::to_string(i);
    std::string body = R"({"n":)" + std::to_string(i) + "}";
    std::thread ta([&, id, body, i] {
      from_a[i] = http_request(a.port(), "POST", "/hooks/x", body, {{"X-Delivery", id}}, 15000);
    });
    std::thread tb([&, id, body, i] {
      from_b[i] = http_request(b.port(), "POST", "/hooks/x", body, {{"X-Delivery", id}}, 15000);
    });
    ta.join();
    tb.join();
  }
  // Both servers are still up.
  CHECK(a.get("/healthz").status == 200);
  CHECK(b.get("/healthz").status == 200);
  CHECK_FALSE(contains(a.log(), "UNIQUE constraint"));
  CHECK_FALSE(contains(b.log(), "UNIQUE constraint"));
  // Each delivery: exactly one run, and both answers name it.
  std::set<std::string> run_ids;
  for (int i = 0; i < kDeliveries; i++) {
    std::string id = "d-" + std::to_string(i);
    INFO(id << ": a " << show(from_a[i]) << " | b " << show(from_b[i]));
    REQUIRE((from_a[i].status == 202 || from_a[i].status == 200));
    REQUIRE((from_b[i].status == 202 || from_b[i].status == 200));
    CHECK((from_a[i].status == 202) != (from_b[i].status == 202));  // one of them started it
    std::string ra = from_a[i].json_body().value("run_id", "");
    std::string rb = from_b[i].json_body().value("run_id", "");
    CHECK_FALSE(ra.empty());
    CHECK(ra == rb);
    CHECK(query_int(db, "SELECT count(*) FROM runs WHERE json_extract(input, '$.delivery_id')=" +
                            sql_literal(id)) == 1);
    CHECK(query_str(db, "SELECT run_id FROM webhook_deliveries WHERE delivery_id=" +
                            sql_literal(id)) == ra);
    CHECK(query_int(db, "SELECT duplicates FROM webhook_deliveries WHERE delivery_id=" +
                            sql_literal(id)) == 1);
    run_ids.insert(ra);
  }
  CHECK(run_ids.size() == kDeliveries);
  CHECK(query_int(db, "SELECT count(*) FROM runs") == kDeliveries);
  // Every run finishes: none is left running by a server that stopped.
  CHECK(eventually(
      [&] {
        return poll_int(db, "SELECT count(*) FROM runs WHERE status='succeeded'") == kDeliveries;
      },
      15000, 50));
  CHECK(query_int(db, "SELECT count(*) FROM runs WHERE status!='succeeded'") == 0);
  CHECK(a.stop() == 0);
  CHECK(b.stop() == 0);
}
