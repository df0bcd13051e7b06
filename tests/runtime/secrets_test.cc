// o.secret and redaction, in-process (base/secrets.h, bindings/mod_secret.cc and the
// scheduler's choke points): where values come from, what is refused, and that no stored row
// holds a value a pipeline read.
#include "base/secrets.h"

#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <cstdlib>

#include "test_util.h"

using namespace orch;
using namespace orch::test;

namespace {

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

std::string secrets_file(TempDir& dir, const std::string& text, mode_t mode = 0600) {
  std::string path = dir.file("secrets.env");
  write_file(path, text);
  REQUIRE(chmod(path.c_str(), mode) == 0);
  return path;
}

// Every stored text of every table a run writes, one string.
std::string store_text(const std::string& db) {
  std::string all;
  for (const char* table : {"runs", "node_runs", "events", "definitions"})
    for (auto& row : query(db, std::string("select * from ") + table))
      for (auto& col : row) all += col + "\n";
  return all;
}

}  // namespace

TEST_CASE("secrets file: NAME=value lines, comments, CRLF; malformed lines name the line",
          "[stdlib][secrets]") {
  TempDir dir;
  std::map<std::string, std::string> v;
  std::string err;
  std::string path =
      secrets_file(dir, "# tokens\n\nAPI_TOKEN=abc=def \nWin_Line=crlf\r\n  SPACED = x\nEMPTY=\n");
  REQUIRE(load_secrets_file(path, &v, &err));
  CHECK(v.size() == 4);
  CHECK(v["API_TOKEN"] == "abc=def ");  // everything after the first '=', as is
  CHECK(v["Win_Line"] == "crlf");
  CHECK(v["SPACED"] == " x");
  CHECK(v["EMPTY"].empty());

  std::string bad = secrets_file(dir, "OK=1\njust a pasted value\n");
  v.clear();
  CHECK_FALSE(load_secrets_file(bad, &v, &err));
  CHECK(err == "secrets file " + bad +
                   ":2: expected NAME=value with NAME made of letters, digits and '_'");
  CHECK_FALSE(contains(err, "pasted"));  // the line's text may be a secret: not quoted

  CHECK_FALSE(load_secrets_file(dir.file("none.env"), &v, &err));
  CHECK(err == "cannot open secrets file " + dir.file("none.env") + ": No such file or directory");
}

TEST_CASE("secrets file readable by group or others is refused, naming the file and mode",
          "[stdlib][secrets]") {
  TempDir dir;
  std::map<std::string, std::string> v;
  std::string err;
  for (mode_t mode : {0644, 0640, 0604, 0660}) {
    std::string path = secrets_file(dir, "A=1\n", mode);
    char m[8];
    snprintf(m, sizeof m, "%04o", static_cast<unsigned>(mode));
    CHECK_FALSE(load_secrets_file(path, &v, &err));
    CHECK(err == "secrets file " + path + " has mode " + m +
                     "; it must be readable by its owner only (0600 or 0400): chmod 600 " + path);
  }
  for (mode_t mode : {0600, 0400}) {
    std::string path = secrets_file(dir, "A=1\n", mode);
    CHECK(load_secrets_file(path, &v, &err));
  }
}

TEST_CASE("secret source: the environment wins over the file; misses say where they looked",
          "[stdlib][secrets]") {
  TempDir dir;
  std::string path = secrets_file(dir, "FROM_FILE=file-value\nBOTH_PLACES=file\n");
  // Names unique to this test: the environment is the process's own.
  setenv("ORCHRUN_SECRET_BOTH_PLACES", "env-value", 1);
  SecretSource src(path);
  std::string err;
  CHECK(src.get("FROM_FILE", &err) == std::optional<std::string>("file-value"));
  CHECK(src.get("BOTH_PLACES", &err) == std::optional<std::string>("env-value"));
  CHECK_FALSE(src.get("NOPE", &err));
  CHECK(err == "secret 'NOPE' is not set (looked in: env ORCHRUN_SECRET_NOPE, file " + path + ")");
  SecretSource none("");
  CHECK_FALSE(none.get("NOPE", &err));
  CHECK(err ==
        "secret 'NOPE' is not set (looked in: env ORCHRUN_SECRET_NOPE; no secrets file: pass "
        "--secrets FILE or set ORCHRUN_SECRETS_FILE)");
  unsetenv("ORCHRUN_SECRET_BOTH_PLACES");
}

TEST_CASE("a secret a pipeline read is redacted from outputs, logs, events and errors in the store",
          "[stdlib][secrets]") {
  Harness h;
  // A value with a quote and a backslash: inside stored JSON it appears escaped.
  const std::string value = R"(tok"en\s3cr3t-XYZ)";
  h.load_options.sandbox.secrets_file = secrets_file(h.dir, "API_TOKEN=" + value + "\n");
  auto s = h.run(R"(
    local o = require "orch"
    local function deep(tok) error("auth failed for token " .. tok) end
    return o.pipeline "secrets" {
      o.node("use", function(ctx)
        local tok = o.secret "API_TOKEN"
        ctx.log("using token " .. tok, { token = tok })
        print("printed", tok)
        return { header = "Bearer " .. tok, len = #tok }
      end),
      o.node("check", function(ctx, input)
        -- The Lua side keeps the real value: only what leaves for the store is redacted.
        return { same = input.header == "Bearer " .. o.secret "API_TOKEN" }
      end),
      o.node("fail", function(ctx) deep(o.secret "API_TOKEN") end, { retry = 2 }),
    })");
  CHECK(s.status == "failed");
  CHECK(contains(s.error_message, "auth failed for token ***"));
  CHECK_FALSE(contains(s.error_message, "s3cr3t"));
  std::string all = store_text(h.db_path);
  CHECK_FALSE(contains(all, "s3cr3t"));  // neither raw nor JSON-escaped
  CHECK(contains(all, "using token ***"));
  CHECK(contains(all, R"("token":"***")"));
  CHECK(contains(all, R"("header":"Bearer ***")"));
  CHECK(query_str(h.db_path, "select output from node_runs where node_id='check'") ==
        R"({"same":true})");
  CHECK(query_int(h.db_path,
                  "select count(*) from node_runs where node_id='fail' and "
                  "error_message like '%token ***%'") == 2);
  CHECK(query_str(h.db_path, "select error_message from runs") ==
        query_str(h.db_path, "select error_message from node_runs where node_id='fail'"));
  // The live sinks got the redacted events too.
  for (const auto& e : h.log.events) CHECK_FALSE(contains(e.data, "s3cr3t"));
  CHECK(h.close().empty());
}

TEST_CASE("a missing secret fails the node without retries; optional secrets give nil",
          "[stdlib][secrets]") {
  Harness h;
  std::string path = secrets_file(h.dir, "OTHER=value1\n");
  h.load_options.sandbox.secrets_file = path;
  auto s = h.run(R"(
    local o = require "orch"
    return o.pipeline "missing" {
      o.node("opt", function() return { v = o.secret("NOT_THERE", { optional = true }) or "none" } end),
      o.node("need", function() return { v = o.secret "NOT_THERE" } end, { retry = 3 }),
    })");
  CHECK(s.status == "failed");
  CHECK(s.error_type == "secret");
  CHECK(s.error_message ==
        "secret 'NOT_THERE' is not set (looked in: env ORCHRUN_SECRET_NOT_THERE, "
        "file " +
            path + ")");
  CHECK(query_str(h.db_path, "select output from node_runs where node_id='opt'") ==
        R"({"v":"none"})");
  CHECK(query_int(h.db_path, "select count(*) from node_runs where node_id='need'") == 1);
  CHECK(query_str(h.db_path, "select retryable from node_runs where node_id='need'") == "0");
  CHECK(h.close().empty());
}

TEST_CASE("o.secret with a secrets file open to others fails, naming the file and its mode",
          "[stdlib][secrets]") {
  Harness h;
  std::string path = secrets_file(h.dir, "API_TOKEN=value1\n", 0644);
  h.load_options.sandbox.secrets_file = path;
  auto s = h.run(R"(
    local o = require "orch"
    return o.pipeline "refused" {
      o.node("need", function() return { v = o.secret "API_TOKEN" } end),
    })");
  CHECK(s.status == "failed");
  CHECK(s.error_type == "secret");
  CHECK(s.error_message == "secret 'API_TOKEN': secrets file " + path +
                               " has mode 0644; it must be readable by its owner only (0600 or "
                               "0400): chmod 600 " +
                               path);
  CHECK(h.close().empty());
}

TEST_CASE("o.secret misuse raises at the caller's line; secrets read at load time are redacted",
          "[stdlib][secrets]") {
  auto diags = Harness::diagnose(R"(
    local o = require "orch"
    local bad = o.secret "not-a-name"
    return o.pipeline "x" { o.node("a", function() end) })");
  REQUIRE(diags.size() == 1);
  CHECK(contains(diags[0].str(), "test.lua:3: o.secret: invalid secret name 'not-a-name'"));

  Harness h;
  h.load_options.sandbox.secrets_file = secrets_file(h.dir, "HOOK_SECRET=load-time-value\n");
  // A load error that carries the value does not show it.
  SandboxOptions sb;
  sb.secrets_file = h.load_options.sandbox.secrets_file;
  auto load_err = Harness::diagnose(R"(
    local o = require "orch"
    error("cannot use " .. o.secret "HOOK_SECRET")
    return o.pipeline "x" { o.node("a", function() end) })",
                                    sb);
  REQUIRE(load_err.size() == 1);
  CHECK(contains(load_err[0].str(), "cannot use ***"));
  CHECK_FALSE(contains(load_err[0].str(), "load-time-value"));
  // Read when the file is loaded (as a webhook trigger would) and kept in an upvalue.
  auto s = h.run(R"(
    local o = require "orch"
    local hook = o.secret "HOOK_SECRET"
    return o.pipeline "load" {
      o.node("a", function() return { hook = hook } end),
    })");
  CHECK(s.status == "succeeded");
  CHECK(s.output_json == R"({"hook":"***"})");
  CHECK_FALSE(contains(store_text(h.db_path), "load-time-value"));
  CHECK(h.close().empty());
}
