// llama2.c tokenizer.bin, encoded and decoded exactly as karpathy/llama2.c run.c does
// (`encode`, `decode`; commit 350e04fe).
//
// File format: int32 max_token_length, then per id: float32 score, int32 len, len bytes (no
// NUL). The file does not store the vocabulary size (run.c takes it from the checkpoint), so
// entries are read until the end of the file, which must fall on an entry boundary.
// Ids 1 and 2 are BOS and EOS (run.c hard-codes them); byte fallback is id = byte + 3.
#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>
#include <queue>

#include "common/error.hpp"
#include "common/tokenizer.hpp"

namespace shardq {
namespace {

// run.c's `best_score` starts here, so a merge scoring at or below it is never taken.
constexpr float merge_score_floor = -1e10f;

class Llama2cTokenizer final : public Tokenizer {
 public:
  Llama2cTokenizer(std::vector<std::string> pieces, std::vector<float> scores)
      : pieces_(std::move(pieces)), scores_(std::move(scores)) {
    sorted_.reserve(pieces_.size());
    for (size_t i = 0; i < pieces_.size(); ++i) sorted_.emplace_back(pieces_[i], static_cast<int32_t>(i));
    // run.c sorts with strcmp (bytes compared as unsigned char, as std::string does); where a
    // piece occurs twice its unstable qsort may return either id, we return the lowest.
    std::sort(sorted_.begin(), sorted_.end());
    space_id_ = lookup(" ");
  }

  std::vector<int32_t> encode(std::string_view text, bool bos) const override;
  std::string decode_piece(int32_t prev, int32_t token) const override;
  int vocab_size() const override { return static_cast<int>(pieces_.size()); }
  int32_t bos_id() const override { return 1; }
  int32_t eos_id() const override { return 2; }

 private:
  int32_t lookup(std::string_view piece) const {
    auto it = std::lower_bound(sorted_.begin(), sorted_.end(), piece,
                               [](const auto& entry, std::string_view key) { return entry.first < key; });
    return it != sorted_.end() && it->first == piece ? it->second : -1;
  }
  void merge(std::vector<int32_t>& tokens) const;

  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::vector<std::pair<std::string, int32_t>> sorted_;
  int32_t space_id_ = -1;
};

std::vector<int32_t> Llama2cTokenizer::encode(std::string_view text, bool bos) const {
  // run.c reads a C string: the text ends at the first NUL byte.
  text = text.substr(0, std::min(text.size(), text.find('\0')));
  std::vector<int32_t> tokens;
  tokens.reserve(text.size() + 2);
  if (bos) tokens.push_back(bos_id());
  // SentencePiece's add_dummy_prefix; run.c pushes str_lookup(" ") even when it is -1, which
  // would be an invalid id, so we require the piece.
  if (!text.empty()) {
    io_check(space_id_ >= 0, "llama2.c tokenizer has no \" \" piece for the dummy prefix");
    tokens.push_back(space_id_);
  }

  // UTF-8 codepoints (at most 4 bytes, as run.c caps the buffer) looked up whole; a
  // codepoint without a piece falls back to one token per byte.
  std::string buffer;
  for (size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if ((c & 0xC0) != 0x80) buffer.clear();
    buffer.push_back(static_cast<char>(c));
    const bool next_continues =
        i + 1 < text.size() && (static_cast<unsigned char>(text[i + 1]) & 0xC0) == 0x80;
    if (next_continues && buffer.size() < 4) continue;
    const int32_t id = lookup(buffer);
    if (id != -1) {
      tokens.push_back(id);
    } else {
      for (unsigned char b : buffer) {
        // run.c emits byte + 3 unconditionally; in a vocabulary without byte pieces (a
        // character-level one such as tok105) that id is out of range or a wrong character,
        // so out-of-range ids become <unk> (0) instead.
        const int32_t fallback = int32_t{b} + 3;
        tokens.push_back(fallback < vocab_size() ? fallback : 0);
      }
    }
    buffer.clear();
  }
  merge(tokens);
  return tokens;
}

// run.c merges, while any exists, the adjacent pair whose concatenation is a piece with the
// best score, taking the leftmost pair on ties — an O(n²) rescan per merge. This does the
// same merges in O(n log n): a heap of candidate pairs ordered by (score desc, left position
// asc) over a linked list of symbols. Merging keeps the left symbol's position, so positions
// keep the sequence order and "leftmost" is the smallest position; a popped candidate is
// used only if both of its symbols are still the ones it was made from. Note that run.c also
// considers pairs that start with BOS.
void Llama2cTokenizer::merge(std::vector<int32_t>& tokens) const {
  const int n = static_cast<int>(tokens.size());
  if (n < 2) return;
  struct Symbol {
    int32_t id;
    int prev, next;
  };
  struct Candidate {
    float score;
    int left, right;
    int32_t left_id, right_id, merged;
  };
  const auto worse = [](const Candidate& a, const Candidate& b) {
    return a.score != b.score ? a.score < b.score : a.left > b.left;
  };
  std::vector<Symbol> symbols(n);
  for (int i = 0; i < n; ++i) symbols[i] = {tokens[i], i - 1, i + 1 < n ? i + 1 : -1};
  std::priority_queue<Candidate, std::vector<Candidate>, decltype(worse)> heap(worse);
  std::string pair;
  const auto consider = [&](int left) {
    if (left < 0) return;
    const int right = symbols[left].next;
    if (right < 0) return;
    pair = pieces_[symbols[left].id];
    pair += pieces_[symbols[right].id];
    const int32_t id = lookup(pair);
    if (id != -1 && scores_[id] > merge_score_floor)
      heap.push({scores_[id], left, right, symbols[left].id, symbols[right].id, id});
  };
  for (int i = 0; i + 1 < n; ++i) consider(i);

  std::vector<bool> alive(n, true);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    if (!alive[c.left] || !alive[c.right] || symbols[c.left].next != c.right ||
        symbols[c.left].id != c.left_id || symbols[c.right].id != c.right_id)
      continue;
    symbols[c.left].id = c.merged;
    symbols[c.left].next = symbols[c.right].next;
    if (symbols[c.right].next >= 0) symbols[symbols[c.right].next].prev = c.left;
    alive[c.right] = false;
    consider(symbols[c.left].prev);
    consider(c.left);
  }
  tokens.clear();
  for (int i = 0; i >= 0; i = symbols[i].next) tokens.push_back(symbols[i].id);
}

// run.c `decode`: sscanf(piece, "<0x%02hhX>") — "<0x" and one or two hex digits.
int parse_byte_piece(std::string_view piece) {
  if (piece.size() < 4 || piece.substr(0, 3) != "<0x") return -1;
  const auto hex = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  const int hi = hex(piece[3]);
  if (hi < 0) return -1;
  const int lo = piece.size() > 4 ? hex(piece[4]) : -1;
  return lo < 0 ? hi : hi * 16 + lo;
}

std::string Llama2cTokenizer::decode_piece(int32_t prev, int32_t token) const {
  io_check(token >= 0 && token < vocab_size(), "token id {} is outside the llama2.c vocabulary of {}",
           token, vocab_size());
  std::string_view piece = pieces_[token];
  // After BOS, SentencePiece's decoder strips the dummy-prefix space (llama2.c PR #89).
  if (prev == bos_id() && !piece.empty() && piece.front() == ' ') piece.remove_prefix(1);
  if (const int byte = parse_byte_piece(piece); byte >= 0) return std::string(1, static_cast<char>(byte));
  return std::string(piece);
}

}  // namespace

std::unique_ptr<Tokenizer> tokenizer_llama2c_load(const std::filesystem::path& tokenizer_bin) {
  const std::string name = tokenizer_bin.string();
  std::ifstream in(tokenizer_bin, std::ios::binary);
  io_check(static_cast<bool>(in), "cannot open llama2.c tokenizer '{}'", name);
  const std::string bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  io_check(!in.bad(), "cannot read llama2.c tokenizer '{}'", name);

  size_t offset = 0;
  const auto read_i32 = [&](std::string_view what, size_t id) {
    io_check(offset + 4 <= bytes.size(), "llama2.c tokenizer '{}' is truncated: {} of id {} at byte {}",
             name, what, id, offset);
    int32_t v;
    std::memcpy(&v, bytes.data() + offset, 4);  // little-endian file, little-endian host
    offset += 4;
    return v;
  };
  io_check(bytes.size() >= 4, "llama2.c tokenizer '{}' is truncated: {} bytes, no header", name,
           bytes.size());
  const int32_t max_token_length = read_i32("max_token_length", 0);
  io_check(max_token_length > 0, "llama2.c tokenizer '{}': max_token_length {} is not positive", name,
           max_token_length);

  std::vector<std::string> pieces;
  std::vector<float> scores;
  while (offset < bytes.size()) {
    const size_t id = pieces.size();
    const int32_t score_bits = read_i32("score", id);
    const int32_t len = read_i32("length", id);
    io_check(len >= 0, "llama2.c tokenizer '{}': id {} has negative length {}", name, id, len);
    io_check(offset + static_cast<size_t>(len) <= bytes.size(),
             "llama2.c tokenizer '{}' is truncated: id {} needs {} bytes at byte {}, file has {}", name,
             id, len, offset, bytes.size());
    float score;
    std::memcpy(&score, &score_bits, 4);
    scores.push_back(score);
    pieces.emplace_back(bytes.data() + offset, static_cast<size_t>(len));
    offset += static_cast<size_t>(len);
  }
  io_check(pieces.size() >= 3, "llama2.c tokenizer '{}' has {} pieces; ids 0-2 (<unk>, BOS, EOS) are required",
           name, pieces.size());
  return std::make_unique<Llama2cTokenizer>(std::move(pieces), std::move(scores));
}

}  // namespace shardq
