// Hardening findings of the store, through the real binary: two servers on one database
// deduplicating the same webhook deliveries, and a disk that fills up under a server.
#include <signal.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "base/json_util.h"
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

// A tmpfs of `size` on `dir`, unmounted at the end of the test (even when a check failed).
class Tmpfs {
 public:
  Tmpfs(const std::string& dir, const std::string& size) : dir_(dir) {
    mkdir(dir.c_str(), 0755);
    auto r = run_cmd({"mount", "-t", "tmpfs", "-o", "size=" + size, "tmpfs", dir});
    mounted_ = r.exit_code == 0;
    error_ = r.out + r.err;
  }
  ~Tmpfs() {
    if (mounted_) run_cmd({"umount", "-l", dir_});
  }
  Tmpfs(const Tmpfs&) = delete;
  Tmpfs& operator=(const Tmpfs&) = delete;
  bool mounted() const { return mounted_; }
  const std::string& error() const { return error_; }
  const std::string& path() const { return dir_; }
  // A file takes every free block (dd until ENOSPC), then gives `leave` bytes back.
  void fill(int64_t leave = 0) {
    run_cmd({"dd", "if=/dev/zero", "of=" + dir_ + "/filler", "bs=64k"});
    if (leave > 0) {
      struct stat st {};
      REQUIRE(stat((dir_ + "/filler").c_str(), &st) == 0);
      REQUIRE(truncate((dir_ + "/filler").c_str(), st.st_size > leave ? st.st_size - leave : 0) ==
              0);
    }
    struct statvfs v {};
    statvfs(dir_.c_str(), &v);
    int64_t free_bytes = static_cast<int64_t>(v.f_bavail * v.f_frsize);
    INFO("free bytes after the filler: " << free_bytes);
    CHECK(free_bytes < leave + 64 * 1024);
  }
  void unfill() { CHECK(unlink((dir_ + "/filler").c_str()) == 0); }

 private:
  std::string dir_, error_;
  bool mounted_ = false;
};

// Joins a thread at the end of the scope, whatever happens before.
struct Joiner {
  std::thread& t;
  ~Joiner() {
    if (t.joinable()) t.join();
  }
};

const char* kSmall = R"(local o = require "orch"
return o.pipeline "small" {
  triggers = { o.webhook { path = "/hooks/small" } },
  o.node("n", function(ctx) return { ok = true } end),
}
)";

// A run whose output (2 MiB, stored with the node and the run) does not fit on a full disk.
const char* kBig = R"(local o = require "orch"
return o.pipeline "big" {
  o.node("n", function(ctx) return { blob = string.rep("x", 2 * 1024 * 1024) } end),
}
)";

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
    TestThread ta([&, id, body, i] {
      from_a[i] = http_request(a.port(), "POST", "/hooks/x", body, {{"X-Delivery", id}}, 15000);
    });
    TestThread tb([&, id, body, i] {
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

TEST_CASE(
    "a full disk: the server refuses new work with 503, holds its runs, and goes on "
    "once there is room",
    "[hardening][store]") {
  if (geteuid() != 0) ORCH_SKIP("needs root to mount a tmpfs");
  TempDir d;
  Tmpfs disk(d.file("disk"), "32m");
  if (!disk.mounted()) ORCH_SKIP("cannot mount a tmpfs: " << disk.error());
  std::string dir = d.file("p");
  mkdir(dir.c_str(), 0755);
  write_file(dir + "/small.lua", kSmall);
  write_file(dir + "/big.lua", kBig);
  // The database (and its -wal, -shm) on the tmpfs, through a link: the server's log, which
  // ServeProcess puts beside the path it is given, and the workspaces stay off the full disk.
  REQUIRE(symlink((disk.path() + "/s.db").c_str(), d.file("s.db").c_str()) == 0);
  const std::string db = d.file("s.db");
  ServeProcess srv(dir, db, {"--grace", "1s"});

  // Runs committed before the disk fills.
  std::vector<std::string> before;
  for (int i = 0; i < 3; i++) {
    auto r = srv.post("/api/pipelines/small/runs", R"({"input":{"i":)" + std::to_string(i) + "}}");
    REQUIRE(r.status == 202);
    before.push_back(r.json_body()["run_id"]);
  }
  for (auto& id : before) REQUIRE(srv.wait_run(id, "succeeded")["status"] == "succeeded");

  disk.fill();
  // A run whose output does not fit: the commit fails; the answer comes once it is durable.
  HttpReply big;
  std::thread client(
      [&] { big = http_request(srv.port(), "POST", "/api/pipelines/big/runs", "{}", {}, 60000); });
  Joiner join{client};
  REQUIRE(eventually([&] { return srv.get("/healthz").status == 503; }, 10000, 50));
  auto health = srv.get("/healthz");
  INFO(show(health));
  CHECK(health.json_body().value("status", "") == "store_full");
  CHECK(kill(srv.pid(), 0) == 0);  // still up
  CHECK(contains(srv.log(), "disk full"));
  // New work is refused, with a time to come back.
  auto refused = srv.post("/api/pipelines/small/runs", "{}");
  INFO(show(refused));
  CHECK(refused.status == 503);
  CHECK(refused.error_code() == "store_full");
  CHECK_FALSE(refused.header("retry-after").empty());
  auto hook = srv.request("POST", "/hooks/small", "{}");
  CHECK(hook.status == 503);
  CHECK(hook.error_code() == "store_full");
  auto metrics = srv.get("/metrics");
  CHECK(contains(metrics.body, "\norchrun_store_full 1\n"));
  CHECK(contains(metrics.body, "orchrun_store_errors_total{kind=\"full\"} "));
  CHECK_FALSE(contains(metrics.body, "orchrun_store_errors_total{kind=\"full\"} 0\n"));
  // Reads go on from what was committed.
  CHECK(srv.get("/api/runs/" + before[0]).status == 200);
  // The retries (every second) fail while the disk stays full; the server stays up.
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  CHECK(srv.get("/healthz").status == 503);
  CHECK(kill(srv.pid(), 0) == 0);

  // Room again: what was held is committed, the run goes on, new work is accepted.
  disk.unfill();
  CHECK(eventually([&] { return srv.get("/healthz").status == 200; }, 10000, 50));
  client.join();
  INFO("big: " << show(big));
  REQUIRE(big.status == 202);
  std::string big_id = big.json_body()["run_id"];
  CHECK(srv.wait_run(big_id, "succeeded,failed")["status"] == "succeeded");
  auto again = srv.post("/api/pipelines/small/runs", "{}");
  REQUIRE(again.status == 202);
  CHECK(srv.wait_run(again.json_body()["run_id"], "succeeded")["status"] == "succeeded");
  CHECK(srv.get("/metrics").body.find("\norchrun_store_full 0\n") != std::string::npos);
  CHECK(contains(srv.log(), "room again"));
  CHECK(srv.stop() == 0);

  // Nothing committed before is lost, and the held run is there in full.
  for (auto& id : before) {
    CHECK(query_str(db, "SELECT status FROM runs WHERE id=" + sql_literal(id)) == "succeeded");
    CHECK(query_int(db, "SELECT count(*) FROM node_runs WHERE status='succeeded' AND run_id=" +
                            sql_literal(id)) == 1);
  }
  CHECK(query_int(db, "SELECT count(*) FROM runs") == 5);
  CHECK(query_int(db, "SELECT count(*) FROM runs WHERE status!='succeeded'") == 0);
  CHECK(query_int(db, "SELECT length(output) FROM node_runs WHERE run_id=" + sql_literal(big_id)) >
        2 * 1024 * 1024);
  CHECK(query_int(db, "SELECT count(*) FROM events WHERE kind='run.succeeded'") == 5);
}

TEST_CASE("a server stopped while the disk is full exits 3; what was committed is intact",
          "[hardening][store]") {
  if (geteuid() != 0) ORCH_SKIP("needs root to mount a tmpfs");
  TempDir d;
  Tmpfs disk(d.file("disk"), "32m");
  if (!disk.mounted()) ORCH_SKIP("cannot mount a tmpfs: " << disk.error());
  std::string dir = d.file("p");
  mkdir(dir.c_str(), 0755);
  write_file(dir + "/small.lua", kSmall);
  write_file(dir + "/big.lua", kBig);
  REQUIRE(symlink((disk.path() + "/s.db").c_str(), d.file("s.db").c_str()) == 0);
  const std::string db = d.file("s.db");
  std::vector<std::string> before;
  {
    ServeProcess srv(dir, db, {"--grace", "1s"});
    for (int i = 0; i < 2; i++) {
      auto r = srv.post("/api/pipelines/small/runs", "{}");
      REQUIRE(r.status == 202);
      before.push_back(r.json_body()["run_id"]);
    }
    for (auto& id : before) REQUIRE(srv.wait_run(id, "succeeded")["status"] == "succeeded");
    disk.fill();
    HttpReply big;
    std::thread client([&] {
      big = http_request(srv.port(), "POST", "/api/pipelines/big/runs", "{}", {}, 30000);
    });
    Joiner join{client};
    REQUIRE(eventually([&] { return srv.get("/healthz").status == 503; }, 10000, 50));
    // Stopped before there is room: the held writes are lost, and it says so.
    CHECK(srv.stop() == 3);
    CHECK(contains(srv.log(), "could not be committed"));
    client.join();
    // Accepted only if its start was committed before the disk filled; else no answer.
    INFO(show(big));
    CHECK((big.status == 202 || big.status == 0));
    if (big.status == 0)
      CHECK(query_int(db, "SELECT count(*) FROM runs WHERE pipeline='big'") == 0);
  }
  disk.unfill();
  // The next start finds what was committed, and runs what was left unfinished to the end.
  ServeProcess srv(dir, db, {"--grace", "1s"});
  for (auto& id : before)
    CHECK(query_str(db, "SELECT status FROM runs WHERE id=" + sql_literal(id)) == "succeeded");
  CHECK(eventually(
      [&] { return poll_int(db, "SELECT count(*) FROM runs WHERE status!='succeeded'") == 0; },
      10000, 50));
  auto again = srv.post("/api/pipelines/small/runs", "{}");
  REQUIRE(again.status == 202);
  CHECK(srv.wait_run(again.json_body()["run_id"], "succeeded")["status"] == "succeeded");
  CHECK(srv.stop() == 0);
}

TEST_CASE("a one-shot run on a full disk exits 3 and says the disk is full", "[hardening][store]") {
  if (geteuid() != 0) ORCH_SKIP("needs root to mount a tmpfs");
  TempDir d;
  Tmpfs disk(d.file("disk"), "8m");
  if (!disk.mounted()) ORCH_SKIP("cannot mount a tmpfs: " << disk.error());
  write_file(d.file("small.lua"), kSmall);
  write_file(d.file("big.lua"), kBig);
  const std::string db = disk.path() + "/o.db";
  auto first = orchrun({d.file("small.lua")}, db);
  INFO(first.out << first.err);
  REQUIRE(first.exit_code == 0);
  // Room to open the database (its -shm file) and start, not for the run's output: the
  // commit fails.
  disk.fill(512 * 1024);
  auto r = orchrun({d.file("big.lua")}, db);
  INFO(r.out << r.err);
  CHECK(r.exit_code == 3);
  CHECK(contains(r.err, "disk full"));
  CHECK(contains(r.err, db));
  disk.unfill();
  // No room at all: the database cannot even be opened, and the message says why.
  disk.fill();
  auto r2 = orchrun({d.file("small.lua")}, db);
  INFO(r2.out << r2.err);
  CHECK(r2.exit_code == 3);
  CHECK(contains(r2.err, "disk full"));
  CHECK(contains(r2.err, db));
  CHECK_FALSE(contains(r2.err, "not an orchrun database"));
  disk.unfill();
  // What was committed before is intact.
  CHECK(query_str(db, "SELECT status FROM runs WHERE pipeline='small'") == "succeeded");
  CHECK(query_int(db, "SELECT count(*) FROM runs") <= 2);
}

TEST_CASE(
    "the store holds the writes of a commit that failed on a full disk and applies them "
    "again as they were",
    "[hardening][store]") {
  if (geteuid() != 0) ORCH_SKIP("needs root to mount a tmpfs");
  TempDir d;
  Tmpfs disk(d.file("disk"), "16m");
  if (!disk.mounted()) ORCH_SKIP("cannot mount a tmpfs: " << disk.error());
  const std::string db = disk.path() + "/h.db";
  std::string err;
  auto st = Store::open(db, {}, &err);
  REQUIRE(st);
  st->set_hold_when_full(true);
  auto d0 = st->upsert_definition("p", "sha0", "src0", "p.lua", 1);
  REQUIRE(d0);
  st->commit();
  REQUIRE(st->commits() == 1);

  disk.fill();
  // One transaction with every kind of write, and the ids the store hands out in it; the
  // definition's source does not fit on the disk.
  auto d1 = st->upsert_definition("p", "sha1", std::string(3 << 20, 's'), "p.lua", 2);
  REQUIRE(d1);
  CHECK(d1->version == 2);
  RunRow r;
  r.id = "R1";
  r.trace_id = "T1";
  r.pipeline = "p";
  r.version = 2;
  r.status = "running";
  r.source = "webhook";
  r.input = R"({"a":"it's"})";
  r.created_at = r.started_at = 2;
  r.owner_pid = getpid();
  st->insert_run(r);
  auto claimed = st->claim_delivery("p", "dlv-1", "R1", 2, &err);
  REQUIRE(claimed);
  CHECK(*claimed == "R1");
  st->insert_node_attempt("R1", "n", 1, "body", 3);
  int64_t ev = st->insert_event(run_event(r, "run.started", 2));
  ArtifactRow a;
  a.run_id = "R1";
  a.node_id = "n";
  a.attempt = 1;
  a.path = "f.txt";
  a.size = 1;
  a.sha256 = "x";
  a.created_at = 3;
  int64_t art = st->insert_artifact(a);
  st->insert_artifact_use(art, "R1", "m", 1, 4);
  auto incidents = st->record_incidents(
      {IncidentIn{"fp1", "disk", "high", "firing", "test", "{}", "{}", "", ""}}, "R1", "n", 1, 4);
  REQUIRE(incidents.size() == 1);
  st->set_run_incident("R1", incidents[0].id, "fp1");
  CHECK(ev > 0);
  CHECK(art > 0);
  st->commit();
  INFO(st->error());
  CHECK(st->full());
  CHECK_FALSE(st->failed());
  CHECK(st->full_errors() == 1);
  CHECK(st->held_writes() >= 9);
  CHECK(st->commits() == 1);
  CHECK(query_int(db, "SELECT count(*) FROM runs") == 0);  // nothing of it is on the disk
  // Still full: the retry fails and holds; a write made meanwhile joins what is held.
  CHECK_FALSE(st->retry_full());
  CHECK(st->full());
  CHECK(st->full_errors() == 2);
  NodeRunRow n;
  n.run_id = "R1";
  n.node_id = "n";
  n.attempt = 1;
  n.status = "succeeded";
  n.finished_at = 5;
  n.output = "{}";
  st->finish_node_attempt(n);
  st->finish_run("R1", "succeeded", "{}", "", "", "", false, 5);
  st->commit();
  CHECK(st->full());

  disk.unfill();
  CHECK(st->retry_full());
  CHECK_FALSE(st->full());
  CHECK_FALSE(st->failed());
  CHECK(st->held_writes() == 0);
  CHECK(st->commits() == 2);
  // Every write is there, with the ids handed out the first time.
  CHECK(query_int(db, "SELECT id FROM definitions WHERE sha256='sha1'") == d1->id);
  CHECK(query_int(db, "SELECT version FROM definitions WHERE sha256='sha1'") == 2);
  CHECK(query_int(db, "SELECT length(source) FROM definitions WHERE sha256='sha1'") == (3 << 20));
  CHECK(query_str(db, "SELECT status || ' ' || input || ' ' || incident_id FROM runs") ==
        std::string(R"(succeeded {"a":"it's"} )") + std::to_string(incidents[0].id));
  CHECK(query_str(db, "SELECT run_id FROM webhook_deliveries WHERE delivery_id='dlv-1'") == "R1");
  CHECK(query_str(db, "SELECT status FROM node_runs WHERE run_id='R1' AND node_id='n'") ==
        "succeeded");
  CHECK(query_int(db, "SELECT id FROM events WHERE kind='run.started'") == ev);
  CHECK(query_int(db, "SELECT id FROM artifacts") == art);
  CHECK(query_int(db, "SELECT artifact_id FROM artifact_uses") == art);
  CHECK(query_int(db, "SELECT id FROM incidents WHERE fingerprint='fp1'") == incidents[0].id);
  CHECK(query_int(db, "SELECT count(*) FROM incident_runs") == 1);

  // Held writes that no longer apply (another process took the event's id meanwhile): a store
  // failure that says why, never a silent difference.
  disk.fill();
  int64_t ev2 = st->insert_event(run_event(r, "run.note", 6, std::string(3 << 20, 'e')));
  st->commit();
  REQUIRE(st->full());
  disk.unfill();
  {
    auto other = Store::open(db, {}, &err);
    REQUIRE(other);
    CHECK(other->insert_event(run_event(r, "run.other", 7)) == ev2);
    other->commit();
    REQUIRE_FALSE(other->failed());
  }
  CHECK_FALSE(st->retry_full());
  CHECK(st->failed());
  CHECK(contains(st->error(), "cannot be applied again"));
  CHECK(query_int(db, "SELECT count(*) FROM events WHERE kind='run.note'") == 0);
  CHECK(query_int(db, "SELECT count(*) FROM runs WHERE status='succeeded'") == 1);
}
