// libFuzzer target for safetensors_parse (length prefix + header JSON + data size checks).
// Every input must either parse into a layout that honours the format's invariants or be
// rejected with io_error; any other exception, a crash or a sanitizer report is a bug.
// Built by tests/fuzz/tests.cmake with clang++ -fsanitize=fuzzer,address,undefined; run:
//   build/tests/fuzz/fuzz_safetensors_header -dict=tests/fuzz/safetensors.dict WORK_DIR tests/fuzz/corpus
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "common/error.hpp"
#include "common/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  try {
    const shardq::SafetensorsLayout layout = shardq::safetensors_parse(bytes, "fuzz input");
    if (layout.data_start < 8 || layout.data_start > size) std::abort();
    const uint64_t data_size = size - layout.data_start;
    uint64_t covered = 0;
    for (const auto& [name, t] : layout.tensors) {
      if (t.begin > t.end || t.end > data_size) std::abort();
      uint64_t numel = 1;
      for (int64_t d : t.shape) {
        if (d < 0) std::abort();
        numel *= static_cast<uint64_t>(d);  // bounded: the parser proved numel * size <= data_size
      }
      if (numel * shardq::dtype_size(t.type) != t.end - t.begin) std::abort();
      covered += t.end - t.begin;
    }
    if (covered > data_size) std::abort();  // non-overlapping ranges cannot cover more than the buffer
  } catch (const shardq::io_error&) {
  }
  return 0;
}
