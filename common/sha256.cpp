// SHA-256 through OpenSSL's EVP interface; see sha256.hpp.
#include "common/sha256.hpp"

#include "common/thread_pool.hpp"

#include <openssl/evp.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <vector>

#include "common/error.hpp"

namespace shardq {
namespace {

struct EvpCtxDeleter {
  void operator()(EVP_MD_CTX* ctx) const noexcept { EVP_MD_CTX_free(ctx); }
};
using EvpCtx = std::unique_ptr<EVP_MD_CTX, EvpCtxDeleter>;

class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) {
    if (!ctx_ || EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) != 1) throw error("EVP_DigestInit_ex(sha256) failed");
  }
  void update(const void* data, size_t n) {
    if (EVP_DigestUpdate(ctx_.get(), data, n) != 1) throw error("EVP_DigestUpdate(sha256) failed");
  }
  std::string hex() {
    std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
    unsigned int n = 0;
    if (EVP_DigestFinal_ex(ctx_.get(), digest.data(), &n) != 1) throw error("EVP_DigestFinal_ex(sha256) failed");
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(2 * n);
    for (unsigned int i = 0; i < n; ++i) {
      out += digits[digest[i] >> 4];
      out += digits[digest[i] & 15];
    }
    return out;
  }

 private:
  EvpCtx ctx_;
};

}  // namespace

std::string sha256_hex(std::span<const std::byte> data) {
  Sha256 h;
  h.update(data.data(), data.size());
  return h.hex();
}

std::string sha256_hex(std::string_view text) {
  Sha256 h;
  h.update(text.data(), text.size());
  return h.hex();
}

std::string sha256_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw io_error(fmt::format("cannot open '{}' for sha256: {}", path.string(), std::strerror(errno)));
  Sha256 h;
  std::vector<char> block(1 << 20);
  while (in) {
    in.read(block.data(), static_cast<std::streamsize>(block.size()));
    if (in.gcount() > 0) h.update(block.data(), static_cast<size_t>(in.gcount()));
  }
  if (in.bad()) throw io_error(fmt::format("failed to read '{}' for sha256", path.string()));
  return h.hex();
}

std::vector<std::string> sha256_files(const std::vector<std::filesystem::path>& paths) {
  std::vector<std::string> out(paths.size());
  parallel_for(static_cast<int>(paths.size()), [&](int i) { out[static_cast<size_t>(i)] = sha256_file(paths[static_cast<size_t>(i)]); });
  return out;
}

}  // namespace shardq
