// The stdlib through the real binary: secrets (--secrets and the environment, what the
// terminal, inspect and the SQLite file show, what child processes inherit) and the data and
// system examples' results.
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "base/json_util.h"
#include "test_util.h"

using namespace orch;
using namespace orch::test;

namespace {

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

std::string store_text(const std::string& db) {
  std::string all;
  for (const char* table : {"runs", "node_runs", "events"})
    for (auto& row : query(db, std::string("select * from ") + table))
      for (auto& col : row) all += col + "\n";
  return all;
}

const char kPipeline[] = R"(
local o = require "orch"
return o.pipeline "leaky" {
  o.node("use", function(ctx)
    local tok = o.secret "DEPLOY_TOKEN"
    ctx.log.warn("calling the API with " .. tok)
    return { auth = "Bearer " .. tok }
  end),
  o.node("boom", function(ctx, input)
    error("API rejected " .. input.auth)
  end),
}
)";

}  // namespace

TEST_CASE("orchrun --secrets: the value never reaches the terminal, inspect or the store",
          "[stdlib][secrets][cli]") {
  TempDir tmp;
  std::string db = tmp.file("s.db");
  std::string file = tmp.file("p.lua");
  write_file(file, kPipeline);
  std::string secrets = tmp.file("secrets.env");
  const std::string value = "dpl-7f3a9c\"quoted\\";
  write_file(secrets, "# deploy\nDEPLOY_TOKEN=" + value + "\n");
  REQUIRE(chmod(secrets.c_str(), 0600) == 0);

  auto r = orchrun({file, "--secrets", secrets, "--progress", "plain"}, db);
  INFO(r.out << r.err);
  CHECK(r.exit_code == 1);
  std::string terminal = r.out + r.err;
  CHECK(contains(terminal, "API rejected Bearer ***"));
  CHECK(contains(terminal, "calling the API with ***"));
  CHECK_FALSE(contains(terminal, "dpl-7f3a9c"));

  auto js = orchrun({file, "--secrets", secrets, "--json", "--quiet"}, db);
  CHECK(js.exit_code == 1);
  CHECK(contains(js.out, "API rejected Bearer ***"));
  CHECK_FALSE(contains(js.out + js.err, "dpl-7f3a9c"));

  std::string run_id = query_str(db, "select id from runs order by created_at limit 1");
  for (std::vector<std::string> args :
       {std::vector<std::string>{"inspect", run_id}, {"inspect", run_id, "--json"}}) {
    auto in = orchrun(args, db);
    INFO(in.out << in.err);
    CHECK(in.exit_code == 0);
    CHECK(contains(in.out, "***"));
    CHECK_FALSE(contains(in.out + in.err, "dpl-7f3a9c"));
  }
  std::string stored = store_text(db);
  CHECK(contains(stored, R"({"auth":"Bearer ***"})"));
  CHECK_FALSE(contains(stored, "dpl-7f3a9c"));

  // Printed while the file loads (before any run exists): redacted too.
  std::string loading = tmp.file("loading.lua");
  write_file(loading, R"(
local o = require "orch"
print("loading with " .. o.secret "DEPLOY_TOKEN")
return o.pipeline "loading" { o.node("a", function() end) }
)");
  auto l = orchrun({loading, "--secrets", secrets, "--quiet"}, db);
  INFO(l.out << l.err);
  CHECK(l.exit_code == 0);
  CHECK(contains(l.err, "loading with ***"));
  CHECK_FALSE(contains(l.out + l.err, "dpl-7f3a9c"));
}

TEST_CASE("orchrun refuses a secrets file others can read before running anything",
          "[stdlib][secrets][cli]") {
  TempDir tmp;
  std::string db = tmp.file("s.db");
  std::string file = tmp.file("p.lua");
  write_file(file, kPipeline);
  std::string secrets = tmp.file("secrets.env");
  write_file(secrets, "DEPLOY_TOKEN=value1\n");
  REQUIRE(chmod(secrets.c_str(), 0644) == 0);

  auto r = orchrun({file, "--secrets", secrets}, db);
  CHECK(r.exit_code == 2);
  CHECK(r.err == "orchrun: --secrets: secrets file " + secrets +
                     " has mode 0644; it must be readable by its owner only (0600 or 0400): "
                     "chmod 600 " +
                     secrets + "\n");
  CHECK(access(db.c_str(), F_OK) != 0);  // nothing ran, nothing was created

  auto env = orchrun({file}, db, {"ORCHRUN_SECRETS_FILE=" + secrets});
  CHECK(env.exit_code == 2);
  CHECK(contains(env.err,
                 "orchrun: ORCHRUN_SECRETS_FILE: secrets file " + secrets + " has mode 0644"));
  auto missing = orchrun({file, "--secrets", tmp.file("nope.env")}, db);
  CHECK(missing.exit_code == 2);
  CHECK(contains(missing.err, "cannot open secrets file " + tmp.file("nope.env")));
}

TEST_CASE("ORCHRUN_SECRET_<NAME> provides a secret; children do not inherit such variables",
          "[stdlib][secrets][cli]") {
  TempDir tmp;
  std::string db = tmp.file("s.db");
  std::string file = tmp.file("env.lua");
  write_file(file, R"(
local o = require "orch"
return o.pipeline "env" {
  o.node("read", function()
    local tok = o.secret "API_KEY"
    local inherited = o.exec { "env", check = true }.stdout
    local passed = o.exec { "sh", "-c", "printf %s \"$TOKEN\"", env = { TOKEN = tok } }.stdout
    return { len = #tok, inherited = inherited:find("ORCHRUN_SECRET_", 1, true) ~= nil,
             unrelated = inherited:find("UNRELATED_VAR=kept", 1, true) ~= nil,
             passed = passed }
  end),
}
)");
  auto r = orchrun({file, "--json", "--quiet"}, db,
                   {"ORCHRUN_SECRET_API_KEY=key-from-env-123", "UNRELATED_VAR=kept"});
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  json out = parse_json(r.out, nullptr).at("output");
  CHECK(out["len"] == 16);
  CHECK(out["inherited"] == false);
  CHECK(out["unrelated"] == true);
  CHECK(out["passed"] == "***");  // passed explicitly, and redacted when it came back
  CHECK_FALSE(contains(store_text(db), "key-from-env-123"));

  // Without the variable or a file, the message says where it looked.
  auto miss = orchrun({file, "--quiet"}, db);
  CHECK(miss.exit_code == 1);
  CHECK(contains(miss.err,
                 "secret 'API_KEY' is not set (looked in: env ORCHRUN_SECRET_API_KEY; "
                 "no secrets file: pass --secrets FILE or set ORCHRUN_SECRETS_FILE)"));
}

TEST_CASE("examples/secrets.lua redacts a configured token and runs without one",
          "[stdlib][secrets][cli]") {
  TempDir tmp;
  std::string db = tmp.file("s.db");
  std::string example = source_dir() + "/examples/secrets.lua";
  auto with =
      orchrun({example, "--progress", "plain"}, db, {"ORCHRUN_SECRET_DEMO_TOKEN=demo-token-value"});
  INFO(with.out << with.err);
  CHECK(with.exit_code == 0);
  CHECK_FALSE(contains(with.out + with.err, "demo-token-value"));
  CHECK(contains(with.out + with.err, "***"));
  CHECK_FALSE(contains(store_text(db), "demo-token-value"));
  auto without = orchrun({example, "--quiet"}, db);
  CHECK(without.exit_code == 0);
}

TEST_CASE("examples/data.lua and examples/system.lua produce their reports", "[stdlib][cli]") {
  TempDir tmp;
  std::string db = tmp.file("e.db");
  auto data = orchrun({source_dir() + "/examples/data.lua", "--json", "--quiet"}, db);
  INFO(data.out << data.err);
  REQUIRE(data.exit_code == 0);
  json out = parse_json(data.out, nullptr).at("output");
  CHECK(out["text"] ==
        "3 firing alerts (group 12345678901234567890), worst first: DiskFull\n"
        "critical: 1, warning: 2\n"
        "- [CRITICAL] DiskFull on db1:9100: /var is 97% full\n"
        "- [WARNING] HighLoad on web1:9100: load 7.9 on 2 cores\n"
        "- [WARNING] CertExpiry on lb1:443: certificate expires in 6 days");
  json shaped = parse_json(out["json"].get<std::string>(), nullptr);
  CHECK(shaped["silenced"] == json::array());
  CHECK(shaped["hosts"] == json::array({"db1:9100"}));

  // Bad input is reported with its position, not retried.
  auto bad = orchrun({source_dir() + "/examples/data.lua", "--quiet", "--input",
                      R"({"payload": "{\"alerts\": [1,]}"})"},
                     db);
  CHECK(bad.exit_code == 1);
  CHECK(contains(bad.err, "payload is not JSON: 1:15: syntax error while parsing value"));

  auto sys = orchrun({source_dir() + "/examples/system.lua", "--json", "--quiet"}, db);
  INFO(sys.out << sys.err);
  REQUIRE(sys.exit_code == 0);
  std::string text = parse_json(sys.out, nullptr).at("output").at("text").get<std::string>();
  CHECK(contains(text, "% of "));
  CHECK(contains(text, " cores, load "));
  CHECK(contains(text, "disk / "));
  CHECK(query_int(db,
                  "select count(*) from events where kind='node.succeeded' and "
                  "node_id='gather/meanwhile'") == 1);
}
