// SHA-256 digests (OpenSSL EVP) of buffers and files, as lowercase hex: the checksums the
// manifest records for the source model's files and for every shard.
#pragma once

#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace shardq {

std::string sha256_hex(std::span<const std::byte> data);
std::string sha256_hex(std::string_view text);
// Streams the file in 1 MiB blocks; throws io_error naming the file if it cannot be read.
std::string sha256_file(const std::filesystem::path& path);
// The digests of several files, hashed on the worker threads (common/thread_pool.hpp): a
// 400B model's 800 GB take minutes on one core.
std::vector<std::string> sha256_files(const std::vector<std::filesystem::path>& paths);

}  // namespace shardq
