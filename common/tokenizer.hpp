// Tokenizers: llama2.c tokenizer.bin (run.c's encode/decode exactly), SentencePiece
// tokenizer.model (libsentencepiece), and pre-tokenized little-endian uint32 id files.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace shardq {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Encodes `text`; with `bos` the BOS id comes first (run.c encode(bos=1, eos=0)).
  virtual std::vector<int32_t> encode(std::string_view text, bool bos) const = 0;
  // The text printed for `token` following `prev` (run.c decode(): the leading space of the
  // first piece after BOS is dropped; <0xNN> pieces become the raw byte).
  virtual std::string decode_piece(int32_t prev, int32_t token) const = 0;
  // Concatenation of decode_piece over ids[1:] with ids[0] as the first `prev`.
  std::string decode(const std::vector<int32_t>& ids) const;
  virtual int vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;
  virtual int32_t eos_id() const = 0;
};

std::unique_ptr<Tokenizer> tokenizer_llama2c_load(const std::filesystem::path& tokenizer_bin);
std::unique_ptr<Tokenizer> tokenizer_sentencepiece_load(const std::filesystem::path& tokenizer_model);
// tokenizer.model (SentencePiece) if present in `model_dir`, else tokenizer.bin (llama2.c);
// io_error when neither exists. With `model_vocab_size` > 0 (config.json's vocab_size) a
// tokenizer with more tokens than the embedding has rows is refused at once: it belongs to
// another model, and its ids would otherwise fail only when a text happens to use one.
std::unique_ptr<Tokenizer> tokenizer_load(const std::filesystem::path& model_dir, int model_vocab_size = 0);

// The bytes of a text file (calibration or evaluation text) for document_stream. A NUL byte
// is refused with its offset: the llama2.c tokenizer reads C strings (run.c), so the rest of
// the document would be dropped without a word, and text has none.
std::string text_file_read(const std::filesystem::path& path, std::string_view what);

// Pre-tokenized calibration/eval files: little-endian uint32 ids.
std::vector<int32_t> token_file_read(const std::filesystem::path& path, int vocab_size);
void token_file_write(const std::filesystem::path& path, const std::vector<int32_t>& ids);

}  // namespace shardq
