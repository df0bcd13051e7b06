// SHA-256 and HMAC-SHA256 (OpenSSL libcrypto), as lower-case hex: pipeline sources, artifacts,
// incident fingerprints, webhook signatures.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace orch {

// Initialises OpenSSL's crypto library once, without reading openssl.cnf. Called by the
// functions below; code that uses OpenSSL directly calls it first.
void init_openssl();
std::string hex_lower(const unsigned char* bytes, size_t n);
std::string sha256_hex(std::string_view data);
// Empty on an OpenSSL failure.
std::string hmac_sha256_hex(std::string_view key, std::string_view data);
// Standard base64 (RFC 4648, with padding), as HTTP Basic authentication sends it.
std::string base64_encode(std::string_view data);

}  // namespace orch
