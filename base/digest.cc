#include "base/digest.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

namespace orch {

std::string hex_lower(const unsigned char* bytes, size_t n) {
  static const char* hex = "0123456789abcdef";
  std::string out(2 * n, '\0');
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = hex[bytes[i] >> 4];
    out[2 * i + 1] = hex[bytes[i] & 15];
  }
  return out;
}

// orchrun asks OpenSSL for SHA-256 and HMAC only (TLS is libcurl's, which initialises OpenSSL
// for itself, with the system's configuration, when it is loaded). Reading and applying
// openssl.cnf at the first hash cost about a millisecond of every start.
void init_openssl() {
  static const bool done = OPENSSL_init_crypto(OPENSSL_INIT_NO_LOAD_CONFIG, nullptr) == 1;
  (void)done;
}

std::string sha256_hex(std::string_view data) {
  init_openssl();
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(data.data(), data.size(), md, &n, EVP_sha256(), nullptr);
  return hex_lower(md, n);
}

namespace {

// HMAC() fetches the MAC and the digest from OpenSSL's providers at every call (a tenth of
// the CPU of a signed webhook delivery): fetch them once into a template context, and copy it.
EVP_MAC_CTX* hmac_sha256_template() {
  static EVP_MAC_CTX* tmpl = [] {
    init_openssl();
    EVP_MAC* mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
    if (!mac) return static_cast<EVP_MAC_CTX*>(nullptr);
    EVP_MAC_CTX* c = EVP_MAC_CTX_new(mac);
    EVP_MAC_free(mac);  // the context keeps its own reference
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", digest, 0),
                           OSSL_PARAM_construct_end()};
    if (c && !EVP_MAC_CTX_set_params(c, params)) {
      EVP_MAC_CTX_free(c);
      c = nullptr;
    }
    return c;
  }();
  return tmpl;
}

}  // namespace

std::string hmac_sha256_hex(std::string_view key, std::string_view data) {
  EVP_MAC_CTX* tmpl = hmac_sha256_template();
  EVP_MAC_CTX* c = tmpl ? EVP_MAC_CTX_dup(tmpl) : nullptr;
  if (!c) return "";
  unsigned char md[EVP_MAX_MD_SIZE];
  size_t n = 0;
  bool ok =
      EVP_MAC_init(c, reinterpret_cast<const unsigned char*>(key.data()), key.size(), nullptr) &&
      EVP_MAC_update(c, reinterpret_cast<const unsigned char*>(data.data()), data.size()) &&
      EVP_MAC_final(c, md, &n, sizeof md);
  EVP_MAC_CTX_free(c);
  return ok ? hex_lower(md, n) : "";
}

std::string base64_encode(std::string_view data) {
  std::string out(4 * ((data.size() + 2) / 3), '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(data.data()),
                          static_cast<int>(data.size()));
  out.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return out;
}

}  // namespace orch
