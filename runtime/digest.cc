#include "runtime/digest.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

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

std::string sha256_hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(data.data(), data.size(), md, &n, EVP_sha256(), nullptr);
  return hex_lower(md, n);
}

std::string hmac_sha256_hex(std::string_view key, std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (!HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
            reinterpret_cast<const unsigned char*>(data.data()), data.size(), md, &n))
    return "";
  return hex_lower(md, n);
}

}  // namespace orch
