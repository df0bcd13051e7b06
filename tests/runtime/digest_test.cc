// SHA-256 and HMAC-SHA256 (webhook signatures) against published test vectors.
#include "base/digest.h"

#include <catch2/catch.hpp>
#include <string>

using namespace orch;

TEST_CASE("sha256_hex matches FIPS 180-2 vectors", "[digest]") {
  CHECK(sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST_CASE("hmac_sha256_hex matches RFC 4231 vectors, call after call", "[digest]") {
  // The MAC context is fetched once and copied per call: repeated and interleaved calls with
  // different keys must not leak state into each other.
  for (int i = 0; i < 3; i++) {
    CHECK(hmac_sha256_hex("Jefe", "what do ya want for nothing?") ==
          "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    CHECK(hmac_sha256_hex(std::string(20, '\x0b'), "Hi There") ==
          "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    // Test case 6: a key longer than the block size is hashed first.
    CHECK(hmac_sha256_hex(std::string(131, '\xaa'),
                          "Test Using Larger Than Block-Size Key - Hash Key First") ==
          "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
  }
  CHECK(hmac_sha256_hex("", "") ==
        "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad");
}
