// The redactor (base/redact.h): what it replaces, and what it leaves alone.
#include "base/redact.h"

#include <catch2/catch.hpp>

#include "base/json_util.h"

using namespace orch;

TEST_CASE("redactor replaces every occurrence of every registered value", "[stdlib][redact]") {
  Redactor r;
  CHECK(r.empty());
  CHECK(r.applied("nothing registered") == "nothing registered");
  CHECK(r.add("hunter2-token"));
  CHECK(r.add("second"));
  CHECK(r.applied("a hunter2-token b hunter2-tokenhunter2-token second") == "a *** b ****** ***");
  CHECK(r.applied("unrelated text") == "unrelated text");
}

TEST_CASE("redactor ignores values too short to redact safely", "[stdlib][redact]") {
  Redactor r;
  CHECK_FALSE(r.add(""));
  CHECK_FALSE(r.add("abc"));
  CHECK(r.empty());
  CHECK(r.applied("abc 123") == "abc 123");
  CHECK(r.add("abcd"));
  CHECK(r.applied("abc abcd") == "abc ***");
}

TEST_CASE("redactor catches a value inside a longer one whole, and its JSON forms",
          "[stdlib][redact]") {
  Redactor r;
  r.add("token");
  r.add("token-with-suffix");
  CHECK(r.applied("x token-with-suffix y token") == "x *** y ***");

  Redactor j;
  std::string secret = "pa\"ss\\word\n";
  REQUIRE(j.add(secret));
  std::string once = dump_json(json{{"v", secret}});
  std::string twice = dump_json(json{{"outer", once}});
  CHECK(j.applied(once) == R"({"v":"***"})");
  CHECK(j.applied(twice) == R"({"outer":"{\"v\":\"***\"}"})");
  CHECK(j.applied("raw: " + secret) == "raw: ***");
}
