// Typed exceptions for everything shardq reports to a user.
//
// Every error carries the call or operation that failed and its context (file, tensor,
// field, rank) so that the top-level handler can print one clear line:
//   "failed to read tensor 'model.layers.3.mlp.up_proj.weight' from 'model-00002.safetensors':
//    offset past end of file"
// C APIs (HDF5, MPI, CUDA, cuBLAS, NCCL) are wrapped once; their wrappers throw these.
#pragma once

#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace shardq {

struct error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A file or stream that cannot be read or written, or whose bytes are malformed.
struct io_error : error {
  using error::error;
};

// A job spec / CLI / REST field that is missing, unknown or out of range.
struct spec_error : error {
  spec_error(std::string field, const std::string& message)
      : error(field.empty() ? message : fmt::format("{}: {}", field, message)),
        field_(std::move(field)), message_(message) {}
  const std::string& field() const noexcept { return field_; }
  const std::string& message() const noexcept { return message_; }

 private:
  std::string field_;
  std::string message_;
};

// A model this version cannot run (unknown architecture, rope scaling, ...).
struct unsupported_error : error {
  using error::error;
};

struct mpi_error : error {
  using error::error;
};

struct cuda_error : error {
  using error::error;
};

// Throws io_error when `ok` is false, formatting the message lazily.
template <typename... Args>
void io_check(bool ok, fmt::format_string<Args...> format, Args&&... args) {
  if (!ok) throw io_error(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace shardq
