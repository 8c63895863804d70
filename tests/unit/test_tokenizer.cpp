// Tokenizers against llama2.c run.c: goldens from run.c's own encode/decode, a literal
// transliteration of run.c `encode` (O(n²) rescans) as the reference for the fast merge, the
// README's token count of calib.txt, round trips on real stories, SentencePiece, token files.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <fstream>
#include <map>
#include <sstream>

#include "common/error.hpp"
#include "common/tokenizer.hpp"
#include "support/test_support.hpp"

namespace shardq {
namespace {

namespace fs = std::filesystem;

fs::path stories_dir() { return test::shared_dir() / "models" / "stories260K"; }
fs::path baby_dir() { return test::shared_dir() / "models" / "babyllama_tok105"; }

std::vector<int32_t> read_ids(const fs::path& path) {
  std::ifstream in(path);
  std::vector<int32_t> ids;
  for (int32_t id; in >> id;) ids.push_back(id);
  return ids;
}

// Stories of a TinyStories file by its README's convention: split on <|endoftext|>, strip,
// drop empty pieces.
std::vector<std::string> read_stories(const fs::path& path) {
  const std::string text = test::read_text(path);
  const std::string sep = "<|endoftext|>";
  std::vector<std::string> stories;
  for (size_t begin = 0; begin <= text.size();) {
    size_t end = text.find(sep, begin);
    if (end == std::string::npos) end = text.size();
    std::string s = text.substr(begin, end - begin);
    const auto first = s.find_first_not_of(" \t\n\r\f\v");
    if (first != std::string::npos) stories.push_back(s.substr(first, s.find_last_not_of(" \t\n\r\f\v") - first + 1));
    begin = end + sep.size();
  }
  return stories;
}

// run.c's tokenizer, transliterated: the vocabulary read here independently, str_lookup as
// a map, and encode() with its full rescan per merge.
struct RunCTokenizer {
  std::vector<std::string> vocab;
  std::vector<float> scores;
  std::map<std::string, int> index;

  explicit RunCTokenizer(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    int32_t max_len = 0;
    in.read(reinterpret_cast<char*>(&max_len), 4);
    float score;
    int32_t len;
    while (in.read(reinterpret_cast<char*>(&score), 4) && in.read(reinterpret_cast<char*>(&len), 4)) {
      std::string piece(static_cast<size_t>(len), '\0');
      in.read(piece.data(), len);
      index.emplace(piece, static_cast<int>(vocab.size()));
      vocab.push_back(piece);
      scores.push_back(score);
    }
  }
  int lookup(const std::string& s) const {
    auto it = index.find(s);
    return it == index.end() ? -1 : it->second;
  }
  std::vector<int32_t> encode(const std::string& text, bool bos) const {
    std::vector<int32_t> tokens;
    if (bos) tokens.push_back(1);
    if (!text.empty()) tokens.push_back(lookup(" "));
    std::string buf;
    for (size_t i = 0; i < text.size(); ++i) {
      if ((text[i] & 0xC0) != 0x80) buf.clear();
      buf += text[i];
      if (i + 1 < text.size() && (text[i + 1] & 0xC0) == 0x80 && buf.size() < 4) continue;
      const int id = lookup(buf);
      if (id != -1) {
        tokens.push_back(id);
      } else {
        for (unsigned char b : buf) tokens.push_back(b + 3);
      }
      buf.clear();
    }
    while (true) {
      float best_score = -1e10f;
      int best_id = -1, best_idx = -1;
      for (size_t i = 0; i + 1 < tokens.size(); ++i) {
        const int id = lookup(vocab[tokens[i]] + vocab[tokens[i + 1]]);
        if (id != -1 && scores[id] > best_score) {
          best_score = scores[id];
          best_id = id;
          best_idx = static_cast<int>(i);
        }
      }
      if (best_idx == -1) break;
      tokens[best_idx] = best_id;
      tokens.erase(tokens.begin() + best_idx + 1);
    }
    return tokens;
  }
};

std::vector<int32_t> prefix(const std::vector<int32_t>& ids, size_t n) {
  return {ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(std::min(n, ids.size()))};
}

TEST(Tokenizer, Tok512EncodesPromptAsRunC) {
  const auto tok = tokenizer_llama2c_load(stories_dir() / "tok512.bin");
  EXPECT_EQ(tok->vocab_size(), 512);
  const auto golden = read_ids(stories_dir() / "golden_greedy_n64_once_upon_a_time.ids");
  const auto ids = tok->encode("Once upon a time", true);
  ASSERT_GE(ids.size(), 2u);
  EXPECT_EQ(ids, prefix(golden, ids.size()));
  EXPECT_EQ(ids, RunCTokenizer(stories_dir() / "tok512.bin").encode("Once upon a time", true));
}

TEST(Tokenizer, Tok105EncodesPromptAsRunCBothWays) {
  const auto golden = read_ids(baby_dir() / "golden_greedy_n64_once_upon_a_time.ids");
  for (const auto& tok : {tokenizer_llama2c_load(baby_dir() / "tok105.bin"),
                          tokenizer_sentencepiece_load(baby_dir() / "tok105.model")}) {
    EXPECT_EQ(tok->vocab_size(), 105);
    EXPECT_EQ(tok->bos_id(), 1);
    EXPECT_EQ(tok->eos_id(), 2);
    const auto ids = tok->encode("Once upon a time", true);
    ASSERT_GE(ids.size(), 2u);
    EXPECT_EQ(ids, prefix(golden, ids.size()));
  }
}

// run.c prints decode(prev, next) for every id after BOS, then a final "\n".
TEST(Tokenizer, DecodeReproducesEveryGoldenText) {
  struct Case {
    fs::path dir;
    std::vector<std::string> tokenizers;
  };
  const Case cases[] = {{stories_dir(), {"tok512.bin"}}, {baby_dir(), {"tok105.bin", "tok105.model"}}};
  for (const Case& c : cases) {
    for (const std::string run : {"golden_greedy_n256", "golden_greedy_n64_once_upon_a_time"}) {
      const auto ids = read_ids(c.dir / (run + ".ids"));
      std::string text = test::read_text(c.dir / (run + ".txt"));
      ASSERT_FALSE(ids.empty());
      ASSERT_EQ(text.back(), '\n');
      text.pop_back();
      for (const auto& name : c.tokenizers) {
        const auto tok = name.ends_with(".model") ? tokenizer_sentencepiece_load(c.dir / name)
                                                  : tokenizer_llama2c_load(c.dir / name);
        EXPECT_EQ(tok->decode(ids), text) << c.dir / name << " " << run;
      }
    }
  }
}

TEST(Tokenizer, FastMergeEqualsRunCOnStoriesAndOddText) {
  const auto tok = tokenizer_llama2c_load(stories_dir() / "tok512.bin");
  const RunCTokenizer ref(stories_dir() / "tok512.bin");
  auto texts = read_stories(test::shared_dir() / "data" / "tinystories" / "calib.txt");
  texts.resize(20);
  texts.insert(texts.end(), {"", " ", "  ", "a", "\n\n", "“Hi,” she said — ñandú 日本 🙂.",
                             "\xF0\x9F\x99\x82\x80\x80 stray \x80 continuation", "aaaaaaaaaaaaaaaa the the the"});
  for (const auto& text : texts) {
    for (bool bos : {true, false}) ASSERT_EQ(tok->encode(text, bos), ref.encode(text, bos)) << text;
  }
}

TEST(Tokenizer, Tok512CountsCalibAsReadme) {
  const auto tok = tokenizer_llama2c_load(stories_dir() / "tok512.bin");
  const auto stories = read_stories(test::shared_dir() / "data" / "tinystories" / "calib.txt");
  EXPECT_EQ(stories.size(), 1129u);
  size_t total = 0;
  for (const auto& story : stories) {
    const auto ids = tok->encode(story, true);
    total += ids.size();
    // Byte fallback keeps every character, so decoding after BOS gives the story back.
    ASSERT_EQ(tok->decode(ids), story);
  }
  EXPECT_EQ(total, 515833u);
}

// tok105.bin was exported from tok105.model; every piece must print the same after any id.
TEST(Tokenizer, SentencePieceDecodesLikeItsLlama2cExport) {
  const auto sp = tokenizer_sentencepiece_load(baby_dir() / "tok105.model");
  const auto bin = tokenizer_llama2c_load(baby_dir() / "tok105.bin");
  for (int32_t prev : {0, 1, 2, 3, 40}) {
    for (int32_t id = 0; id < sp->vocab_size(); ++id) {
      ASSERT_EQ(sp->decode_piece(prev, id), bin->decode_piece(prev, id)) << "prev " << prev << " id " << id;
    }
  }
  EXPECT_THROW(sp->decode_piece(1, 105), io_error);
  EXPECT_THROW(bin->decode_piece(1, -1), io_error);
}

TEST(Tokenizer, SentencePieceRoundTripsAndAgreesWithTok105BinOnAscii) {
  const auto sp = tokenizer_sentencepiece_load(baby_dir() / "tok105.model");
  const auto bin = tokenizer_llama2c_load(baby_dir() / "tok105.bin");
  const auto stories = read_stories(test::shared_dir() / "data" / "tinystories" / "calib.txt");
  int checked = 0;
  for (const auto& story : stories) {
    // One ASCII line with single spaces: text SentencePiece keeps unchanged.
    const std::string line = story.substr(0, story.find('\n'));
    if (line.find("  ") != std::string::npos ||
        std::any_of(line.begin(), line.end(), [](char ch) { return static_cast<unsigned char>(ch) >= 0x80; }))
      continue;
    const auto ids = sp->encode(line, true);
    EXPECT_EQ(sp->decode(ids), line);
    EXPECT_EQ(bin->encode(line, true), ids) << line;
    if (++checked == 20) break;
  }
  EXPECT_EQ(checked, 20);
  // Training-time behaviour (README): a newline is <unk> for SentencePiece.
  EXPECT_EQ(sp->encode("a\nb", false), (std::vector<int32_t>{3, sp->encode("a", false)[1], 0, sp->encode("b", false)[1]}));
}

TEST(Tokenizer, LoadPrefersSentencePieceModel) {
  test::TempDir dir;
  EXPECT_THROW(tokenizer_load(dir.path()), io_error);
  fs::copy_file(baby_dir() / "tok105.bin", dir / "tokenizer.bin");
  EXPECT_EQ(tokenizer_load(dir.path())->encode("ab", true), tokenizer_llama2c_load(baby_dir() / "tok105.bin")->encode("ab", true));
  fs::copy_file(baby_dir() / "tok105.model", dir / "tokenizer.model");
  // Only SentencePiece maps a newline to <unk>.
  EXPECT_EQ(tokenizer_load(dir.path())->encode("a\nb", false)[2], 0);
  // 105 tokens fit an embedding of 105 rows or more, not one of 100.
  EXPECT_EQ(tokenizer_load(dir.path(), 105)->vocab_size(), 105);
  EXPECT_EQ(tokenizer_load(dir.path(), 128)->vocab_size(), 105);
  try {
    tokenizer_load(dir.path(), 100);
    FAIL() << "expected io_error";
  } catch (const io_error& e) {
    EXPECT_NE(std::string(e.what()).find("has 105 tokens, more than the model's vocab_size 100"), std::string::npos)
        << e.what();
  }
  try {
    tokenizer_load(dir / "missing");
    FAIL() << "expected io_error";
  } catch (const io_error& e) {
    EXPECT_NE(std::string(e.what()).find("missing"), std::string::npos) << e.what();
  }
}

void expect_io_error_naming(const std::function<void()>& f, const std::string& name, const std::string& what) {
  try {
    f();
    FAIL() << "expected io_error about " << what;
  } catch (const io_error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find(name), std::string::npos) << message;
    EXPECT_NE(message.find(what), std::string::npos) << message;
  }
}

TEST(Tokenizer, TruncatedTokenizerBinIsRefused) {
  test::TempDir dir;
  const std::string bytes = test::read_text(stories_dir() / "tok512.bin");
  for (size_t keep : {size_t{0}, size_t{2}, size_t{4 + 4 + 2}, bytes.size() - 1, bytes.size() - 7}) {
    const auto path = dir / ("cut" + std::to_string(keep) + ".bin");
    std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(keep));
    expect_io_error_naming([&] { tokenizer_llama2c_load(path); }, path.string(), "truncated");
  }
  expect_io_error_naming([&] { tokenizer_llama2c_load(dir / "absent.bin"); }, "absent.bin", "cannot open");
  expect_io_error_naming([&] { tokenizer_sentencepiece_load(stories_dir() / "tok512.bin"); }, "tok512.bin", "SentencePiece");
}

TEST(Tokenizer, TokenFilesRoundTripAndValidate) {
  test::TempDir dir;
  const std::vector<int32_t> ids = {1, 403, 0, 511, 13, 2};
  token_file_write(dir / "ids.bin", ids);
  const std::string raw = test::read_text(dir / "ids.bin");
  ASSERT_EQ(raw.size(), 24u);
  EXPECT_EQ(static_cast<unsigned char>(raw[4]), 403 & 0xff);  // little-endian
  EXPECT_EQ(static_cast<unsigned char>(raw[5]), 403 >> 8);
  EXPECT_EQ(token_file_read(dir / "ids.bin", 512), ids);
  expect_io_error_naming([&] { token_file_read(dir / "ids.bin", 511); }, "ids.bin", "position 3");
  std::ofstream(dir / "odd.bin", std::ios::binary) << "abcdefg";
  expect_io_error_naming([&] { token_file_read(dir / "odd.bin", 512); }, "odd.bin", "multiple of 4");
  expect_io_error_naming([&] { token_file_read(dir / "none.bin", 512); }, "none.bin", "cannot open");
  EXPECT_TRUE(token_file_read((token_file_write(dir / "empty.bin", {}), dir / "empty.bin"), 512).empty());
}

}  // namespace
}  // namespace shardq
