// SentencePiece tokenizer.model through libsentencepiece. Encoding is SentencePiece's own
// (normalization, dummy prefix, unknowns); pieces are decoded the way llama2.c prints them,
// so that a tokenizer.model and the tokenizer.bin exported from it (llama2.c tokenizer.py:
// BOS -> "\n<s>\n", EOS -> "\n</s>\n", "▁" -> " ") decode every id sequence identically.
#include <sentencepiece_processor.h>

#include "common/error.hpp"
#include "common/tokenizer.hpp"

namespace shardq {
namespace {

constexpr std::string_view space_marker = "\xE2\x96\x81";  // U+2581 "▁"

class SentencePieceTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::filesystem::path& path) : path_(path.string()) {
    const auto status = processor_.Load(path_);
    io_check(status.ok(), "cannot load SentencePiece model '{}': {}", path_, status.ToString());
    pieces_.resize(static_cast<size_t>(processor_.GetPieceSize()));
    for (int id = 0; id < processor_.GetPieceSize(); ++id) pieces_[id] = printed_piece(id);
  }

  std::vector<int32_t> encode(std::string_view text, bool bos) const override {
    std::vector<int> ids;
    const auto status = processor_.Encode(std::string(text), &ids);
    io_check(status.ok(), "SentencePiece '{}' failed to encode: {}", path_, status.ToString());
    std::vector<int32_t> tokens;
    tokens.reserve(ids.size() + 1);
    if (bos) tokens.push_back(bos_id());
    tokens.insert(tokens.end(), ids.begin(), ids.end());
    return tokens;
  }

  std::string decode_piece(int32_t prev, int32_t token) const override {
    io_check(token >= 0 && token < vocab_size(), "token id {} is outside the vocabulary of {} of '{}'",
             token, vocab_size(), path_);
    std::string_view piece = pieces_[token];
    if (prev == bos_id() && !piece.empty() && piece.front() == ' ') piece.remove_prefix(1);
    return std::string(piece);
  }

  int vocab_size() const override { return static_cast<int>(pieces_.size()); }
  int32_t bos_id() const override {
    io_check(processor_.bos_id() >= 0, "SentencePiece model '{}' defines no BOS piece", path_);
    return processor_.bos_id();
  }
  int32_t eos_id() const override {
    io_check(processor_.eos_id() >= 0, "SentencePiece model '{}' defines no EOS piece", path_);
    return processor_.eos_id();
  }

 private:
  std::string printed_piece(int id) const {
    if (id == processor_.bos_id()) return "\n<s>\n";
    if (id == processor_.eos_id()) return "\n</s>\n";
    const std::string& piece = processor_.IdToPiece(id);
    if (processor_.IsByte(id) && piece.size() == 6)  // "<0xNN>"
      return std::string(1, static_cast<char>(std::stoi(piece.substr(3, 2), nullptr, 16)));
    std::string out;
    for (size_t i = 0; i < piece.size();) {
      if (std::string_view(piece).substr(i, space_marker.size()) == space_marker) {
        out += ' ';
        i += space_marker.size();
      } else {
        out += piece[i++];
      }
    }
    return out;
  }

  std::string path_;
  sentencepiece::SentencePieceProcessor processor_;
  std::vector<std::string> pieces_;  // as printed
};

}  // namespace

std::unique_ptr<Tokenizer> tokenizer_sentencepiece_load(const std::filesystem::path& tokenizer_model) {
  io_check(std::filesystem::is_regular_file(tokenizer_model), "SentencePiece model '{}' does not exist",
           tokenizer_model.string());
  return std::make_unique<SentencePieceTokenizer>(tokenizer_model);
}

}  // namespace shardq
