// Tokenizer pieces shared by both kinds: decode over a whole id sequence, choosing the
// tokenizer of a model directory, and pre-tokenized uint32 id files.
#include "common/tokenizer.hpp"

#include <array>
#include <fstream>
#include <sstream>

#include "common/error.hpp"

namespace shardq {

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string text;
  for (size_t i = 1; i < ids.size(); ++i) text += decode_piece(ids[i - 1], ids[i]);
  return text;
}

std::unique_ptr<Tokenizer> tokenizer_load(const std::filesystem::path& model_dir, int model_vocab_size) {
  const auto model = model_dir / "tokenizer.model";
  const auto bin = model_dir / "tokenizer.bin";
  std::unique_ptr<Tokenizer> tokenizer;
  std::filesystem::path file;
  if (std::filesystem::exists(model)) tokenizer = tokenizer_sentencepiece_load(file = model);
  else if (std::filesystem::exists(bin)) tokenizer = tokenizer_llama2c_load(file = bin);
  else
    throw io_error(fmt::format("no tokenizer in '{}': expected tokenizer.model (SentencePiece) or "
                               "tokenizer.bin (llama2.c)",
                               model_dir.string()));
  io_check(model_vocab_size <= 0 || tokenizer->vocab_size() <= model_vocab_size,
           "tokenizer '{}' has {} tokens, more than the model's vocab_size {} (config.json): it is another model's "
           "tokenizer",
           file.string(), tokenizer->vocab_size(), model_vocab_size);
  return tokenizer;
}

std::string text_file_read(const std::filesystem::path& path, std::string_view what) {
  std::ifstream in(path, std::ios::binary);
  io_check(static_cast<bool>(in), "{} '{}': cannot be read", what, path.string());
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  if (const size_t nul = text.find('\0'); nul != std::string::npos)
    throw io_error(fmt::format("{} '{}': NUL byte at offset {}: not a text file (token ids need format 'tokens')", what,
                               path.string(), nul));
  return text;
}

std::vector<int32_t> token_file_read(const std::filesystem::path& path, int vocab_size) {
  std::ifstream in(path, std::ios::binary);
  io_check(static_cast<bool>(in), "cannot open token file '{}'", path.string());
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  io_check(!ec, "cannot stat token file '{}': {}", path.string(), ec.message());
  io_check(size % 4 == 0, "token file '{}': size {} bytes is not a multiple of 4 (uint32 ids)",
           path.string(), size);
  std::vector<int32_t> ids(size / 4);
  std::array<unsigned char, 4> b{};
  for (size_t i = 0; i < ids.size(); ++i) {
    io_check(static_cast<bool>(in.read(reinterpret_cast<char*>(b.data()), 4)),
             "token file '{}': read failed at token {}", path.string(), i);
    const uint32_t id = uint32_t{b[0]} | uint32_t{b[1]} << 8 | uint32_t{b[2]} << 16 |
                        uint32_t{b[3]} << 24;
    io_check(id < static_cast<uint32_t>(vocab_size),
             "token file '{}': id {} at position {} (byte offset {}) is not below vocab size {}",
             path.string(), id, i, 4 * i, vocab_size);
    ids[i] = static_cast<int32_t>(id);
  }
  return ids;
}

void token_file_write(const std::filesystem::path& path, const std::vector<int32_t>& ids) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  io_check(static_cast<bool>(out), "cannot create token file '{}'", path.string());
  std::vector<unsigned char> bytes(4 * ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    io_check(ids[i] >= 0, "token file '{}': negative id {} at position {}", path.string(), ids[i], i);
    const auto id = static_cast<uint32_t>(ids[i]);
    for (int k = 0; k < 4; ++k) bytes[4 * i + k] = static_cast<unsigned char>(id >> (8 * k));
  }
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  out.close();
  io_check(static_cast<bool>(out), "cannot write token file '{}'", path.string());
}

}  // namespace shardq
