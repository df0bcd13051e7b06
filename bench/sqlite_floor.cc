// The floor for the persisted chain: the same rows orchrun writes for N trivial nodes in
// sequence (node attempt insert + update, started/succeeded events), with the same settings
// (WAL, synchronous=NORMAL, prepared statements), and the same store code. No Lua, no loop.
// Prints nodes/s.
//   sqlite_floor DB [N]          one commit per node
//   sqlite_floor DB N SLICE_MS   one commit per SLICE_MS of work, as orchrun's pump commits
//                                a chain of Lua nodes (no outside effect in between)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "base/ids.h"
#include "store/store.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: sqlite_floor DB [N [SLICE_MS]]\n");
    return 2;
  }
  int n = argc > 2 ? atoi(argv[2]) : 10000;
  double slice_ms = argc > 3 ? atof(argv[3]) : 0;
  std::string err;
  auto store = orch::Store::open(argv[1], orch::StoreOptions{}, &err);
  if (!store) {
    fprintf(stderr, "%s\n", err.c_str());
    return 1;
  }
  orch::RunRow run;
  run.id = orch::new_ulid(orch::wall_ms());
  run.trace_id = orch::new_trace_id();
  run.pipeline = "floor";
  run.version = 1;
  run.status = "running";
  run.source = "bench";
  run.created_at = orch::wall_ms();
  store->insert_run(run);
  store->commit();
  auto t0 = std::chrono::steady_clock::now();
  auto last_commit = t0;
  for (int i = 1; i <= n; i++) {
    std::string node = "n" + std::to_string(i);
    int64_t now = orch::wall_ms();
    store->insert_node_attempt(run.id, node, 1, "body", now);
    orch::Event e;
    e.ts = now;
    e.kind = "node.started";
    e.run_id = run.id;
    e.trace_id = run.trace_id;
    e.pipeline = "floor";
    e.version = 1;
    e.node = node;
    e.attempt = 1;
    e.data = "{}";
    store->insert_event(e);
    orch::NodeRunRow r;
    r.run_id = run.id;
    r.node_id = node;
    r.attempt = 1;
    r.status = "succeeded";
    r.finished_at = now;
    r.output = "{\"i\":" + std::to_string(i) + "}";
    store->finish_node_attempt(r);
    e.kind = "node.succeeded";
    e.data = "{\"duration_ms\":0}";
    store->insert_event(e);
    auto t = std::chrono::steady_clock::now();
    if (slice_ms <= 0 ||
        std::chrono::duration<double, std::milli>(t - last_commit).count() >= slice_ms) {
      store->commit();
      last_commit = t;
    }
  }
  store->commit();
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  printf("{\"nodes\":%d,\"seconds\":%.3f,\"nodes_per_s\":%.0f,\"us_per_node\":%.2f}\n", n, s, n / s,
         s * 1e6 / n);
  return store->failed() ? 1 : 0;
}
