// Reading llama2.c legacy checkpoints and converting them to a Hugging Face Llama directory.
#include "common/llama2c.hpp"

#include <fstream>
#include <iterator>

#include <fmt/format.h>

#include "common/atomic_file.hpp"
#include "common/error.hpp"
#include "common/safetensors.hpp"
#include "common/tokenizer.hpp"

namespace shardq {
namespace {

constexpr uint64_t header_bytes = 7 * 4;

std::string describe(const Llama2cConfig& c) {
  return fmt::format("dim {}, hidden_dim {}, n_layers {}, n_heads {}, n_kv_heads {}, vocab_size {} ({}), seq_len {}",
                     c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size,
                     c.shared_classifier ? "shared classifier" : "separate classifier", c.seq_len);
}

// Counts of float32 values in file order; freq_cis is the two skipped RoPE tables.
struct Layout {
  uint64_t embedding, per_layer, final_norm, freq_cis, classifier;
  uint64_t total() const { return embedding + per_layer + final_norm + freq_cis + classifier; }
};

Layout layout_of(const Llama2cConfig& c) {
  const auto dim = static_cast<uint64_t>(c.dim), hidden = static_cast<uint64_t>(c.hidden_dim),
             layers = static_cast<uint64_t>(c.n_layers), kv = static_cast<uint64_t>(c.kv_dim()),
             vocab = static_cast<uint64_t>(c.vocab_size);
  return {vocab * dim,
          layers * (2 * dim + 2 * dim * dim + 2 * kv * dim + 3 * hidden * dim),
          dim,
          2 * static_cast<uint64_t>(c.seq_len) * static_cast<uint64_t>(c.head_dim() / 2),
          c.shared_classifier ? 0 : vocab * dim};
}

std::string_view torch_dtype_of(dtype type) {
  switch (type) {
    case dtype::f32: return "float32";
    case dtype::f16: return "float16";
    case dtype::bf16: return "bfloat16";
    default: throw spec_error("dtype", fmt::format("a converted model is f32, f16 or bf16, not {}", dtype_name(type)));
  }
}

bool is_sentencepiece(const std::filesystem::path& tokenizer) { return tokenizer.extension() == ".model"; }

}  // namespace

uint64_t llama2c_file_bytes(const Llama2cConfig& c) { return header_bytes + 4 * layout_of(c).total(); }

Llama2cConfig llama2c_read_config(const std::filesystem::path& path) {
  const std::string name = path.string();
  std::ifstream in(path, std::ios::binary);
  io_check(static_cast<bool>(in), "cannot open llama2.c checkpoint '{}'", name);
  int32_t h[7];
  in.read(reinterpret_cast<char*>(h), sizeof h);  // little-endian file, little-endian host
  io_check(static_cast<bool>(in), "llama2.c checkpoint '{}' is truncated: shorter than its 28-byte header", name);

  Llama2cConfig c{h[0], h[1], h[2], h[3], h[4], h[5] < 0 ? -h[5] : h[5], h[6], h[5] > 0};
  const char* fields[] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"};
  for (int i = 0; i < 7; ++i) {
    // 2^24 bounds every field of a real checkpoint and keeps the size arithmetic far from overflow.
    io_check(h[i] != 0 && h[i] > -(1 << 24) && h[i] < (1 << 24) && (h[i] > 0 || i == 5),
             "llama2.c checkpoint '{}': header field {} = {} is out of range (is this a llama2.c version 0 file?)",
             name, fields[i], h[i]);
  }
  io_check(c.dim % c.n_heads == 0, "llama2.c checkpoint '{}': n_heads {} does not divide dim {}", name, c.n_heads, c.dim);
  io_check(c.head_dim() % 2 == 0, "llama2.c checkpoint '{}': head size {} is odd; RoPE rotates pairs", name,
           c.head_dim());
  io_check(c.n_heads % c.n_kv_heads == 0, "llama2.c checkpoint '{}': n_kv_heads {} does not divide n_heads {}",
           name, c.n_kv_heads, c.n_heads);

  std::error_code ec;
  const uint64_t size = std::filesystem::file_size(path, ec);
  io_check(!ec, "cannot stat llama2.c checkpoint '{}': {}", name, ec.message());
  const uint64_t expected = llama2c_file_bytes(c);
  io_check(size >= expected, "llama2.c checkpoint '{}' is truncated: {} bytes, but its header ({}) needs {} ({} missing)",
           name, size, describe(c), expected, expected - size);
  io_check(size <= expected,
           "llama2.c checkpoint '{}' has {} trailing bytes: {} bytes, but its header ({}) needs exactly {}", name,
           size - expected, size, describe(c), expected);
  return c;
}

Llama2cCheckpoint llama2c_load(const std::filesystem::path& path) {
  Llama2cCheckpoint ck;
  ck.config = llama2c_read_config(path);
  const Llama2cConfig& c = ck.config;
  std::ifstream in(path, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(header_bytes));
  const auto read = [&](std::vector<int64_t> shape, const char* what) {
    Tensor t(std::move(shape));
    in.read(reinterpret_cast<char*>(t.ptr()), static_cast<std::streamsize>(4 * t.numel()));
    io_check(static_cast<bool>(in), "cannot read {} from llama2.c checkpoint '{}'", what, path.string());
    return t;
  };
  const int64_t dim = c.dim, hidden = c.hidden_dim, kv = c.kv_dim(), vocab = c.vocab_size;
  ck.token_embedding = read({vocab, dim}, "token_embedding");
  // Each array is stacked over layers in the file: all rms_att, then all wq, ...
  ck.layers.resize(static_cast<size_t>(c.n_layers));
  const auto read_layers = [&](Tensor Llama2cLayer::*member, std::vector<int64_t> shape, const char* what) {
    for (auto& layer : ck.layers) layer.*member = read(shape, what);
  };
  read_layers(&Llama2cLayer::rms_att, {dim}, "rms_att");
  read_layers(&Llama2cLayer::wq, {dim, dim}, "wq");
  read_layers(&Llama2cLayer::wk, {kv, dim}, "wk");
  read_layers(&Llama2cLayer::wv, {kv, dim}, "wv");
  read_layers(&Llama2cLayer::wo, {dim, dim}, "wo");
  read_layers(&Llama2cLayer::rms_ffn, {dim}, "rms_ffn");
  read_layers(&Llama2cLayer::w1, {hidden, dim}, "w1");
  read_layers(&Llama2cLayer::w2, {dim, hidden}, "w2");
  read_layers(&Llama2cLayer::w3, {hidden, dim}, "w3");
  ck.rms_final = read({dim}, "rms_final");
  if (!c.shared_classifier) {
    in.seekg(static_cast<std::streamoff>(4 * layout_of(c).freq_cis), std::ios::cur);
    ck.wcls = read({vocab, dim}, "wcls");
  }
  return ck;
}

// llama2.c's RoPE (run.c `forward`) rotates the interleaved pairs (2p, 2p+1) of each head by
// angle pos · 10000^(−2p/head_dim). Hugging Face's LlamaAttention (rotate_half) rotates the
// pairs (p, p + head_dim/2) by the same angle. So with head-local row j of the HF weight
// taken from row 2j (j < head_dim/2) or 2(j − head_dim/2) + 1 (j ≥ head_dim/2) of the
// llama2.c weight, HF's q = P·q_llama2c and rope_hf(P·q) = P·rope_llama2c(q). Applying the
// same P to q and k leaves every attention score q·k unchanged; v and o need nothing. This is
// the `permute` of transformers' convert_llama_weights_to_hf.py (Meta checkpoints share
// llama2.c's layout), whose inverse llama2.c's export.py applies in the other direction.
Tensor llama2c_permute_rope_rows(const Tensor& w, int n_heads) {
  const int64_t rows = w.rows(), cols = w.cols();
  if (n_heads <= 0 || rows % n_heads != 0 || (rows / n_heads) % 2 != 0) {
    throw spec_error("n_heads", fmt::format("cannot split {} rows into {} heads of even size", rows, n_heads));
  }
  const int64_t head_dim = rows / n_heads, half = head_dim / 2;
  Tensor out(w.shape);
  for (int64_t h = 0; h < n_heads; ++h) {
    for (int64_t j = 0; j < head_dim; ++j) {
      const int64_t from = h * head_dim + (j < half ? 2 * j : 2 * (j - half) + 1);
      std::copy_n(w.ptr() + from * cols, cols, out.ptr() + (h * head_dim + j) * cols);
    }
  }
  return out;
}

ModelConfig llama2c_model_config(const Llama2cConfig& c, dtype type) {
  ModelConfig m;
  m.architecture = "LlamaForCausalLM";
  m.model_type = "llama";
  m.hidden_size = c.dim;
  m.intermediate_size = c.hidden_dim;
  m.num_layers = c.n_layers;
  m.num_heads = c.n_heads;
  m.num_kv_heads = c.n_kv_heads;
  m.head_dim = c.head_dim();
  m.vocab_size = c.vocab_size;
  m.max_position_embeddings = c.seq_len;
  m.rms_norm_eps = 1e-5f;   // run.c rmsnorm
  m.rope_theta = 10000.0f;  // run.c forward
  m.tie_word_embeddings = c.shared_classifier;
  m.bos_token_id = 1;
  m.eos_token_id = 2;
  m.torch_dtype = std::string(torch_dtype_of(type));
  return m;
}

void llama2c_convert(const Llama2cConvertOptions& options) {
  torch_dtype_of(options.type);  // refuses a dtype other than f32/f16/bf16 before any work
  const Llama2cCheckpoint ck = llama2c_load(options.model_bin);
  const Llama2cConfig& c = ck.config;

  const auto tokenizer = is_sentencepiece(options.tokenizer) ? tokenizer_sentencepiece_load(options.tokenizer)
                                                             : tokenizer_llama2c_load(options.tokenizer);
  io_check(tokenizer->vocab_size() == c.vocab_size,
           "tokenizer '{}' has {} tokens but llama2.c checkpoint '{}' has vocab_size {}", options.tokenizer.string(),
           tokenizer->vocab_size(), options.model_bin.string(), c.vocab_size);
  // Read now, as the source may be one of the files --force replaces below; copied through
  // our own write (not copy_file) so that a read-only source does not give a read-only copy.
  std::ifstream in(options.tokenizer, std::ios::binary);
  const std::string tokenizer_bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  io_check(!in.bad(), "cannot read tokenizer '{}'", options.tokenizer.string());

  const auto& out = options.output;
  std::error_code ec;
  if (std::filesystem::exists(out, ec)) {
    io_check(std::filesystem::is_directory(out, ec), "output '{}' exists and is not a directory", out.string());
    io_check(options.force || std::filesystem::is_empty(out, ec),
             "output directory '{}' is not empty (use --force to overwrite)", out.string());
  }
  std::filesystem::create_directories(out, ec);
  io_check(!ec, "cannot create output directory '{}': {}", out.string(), ec.message());
  // Files a previous conversion may have left that would shadow this one (tokenizer_load
  // prefers tokenizer.model; an index selects sharded weights).
  for (const char* stale : {"tokenizer.model", "tokenizer.bin", "model.safetensors.index.json"}) {
    std::filesystem::remove(out / stale, ec);
  }

  std::vector<Tensor> permuted;  // wq, wk per layer; reserved so pointers stay valid
  permuted.reserve(2 * ck.layers.size());
  std::vector<std::pair<std::string, const Tensor*>> tensors;
  tensors.emplace_back("model.embed_tokens.weight", &ck.token_embedding);
  for (size_t l = 0; l < ck.layers.size(); ++l) {
    const Llama2cLayer& layer = ck.layers[l];
    const std::string p = layer_prefix(static_cast<int>(l));
    permuted.push_back(llama2c_permute_rope_rows(layer.wq, c.n_heads));
    tensors.emplace_back(p + "self_attn.q_proj.weight", &permuted.back());
    permuted.push_back(llama2c_permute_rope_rows(layer.wk, c.n_kv_heads));
    tensors.emplace_back(p + "self_attn.k_proj.weight", &permuted.back());
    tensors.emplace_back(p + "self_attn.v_proj.weight", &layer.wv);
    tensors.emplace_back(p + "self_attn.o_proj.weight", &layer.wo);
    tensors.emplace_back(p + "mlp.gate_proj.weight", &layer.w1);
    tensors.emplace_back(p + "mlp.up_proj.weight", &layer.w3);
    tensors.emplace_back(p + "mlp.down_proj.weight", &layer.w2);
    tensors.emplace_back(p + "input_layernorm.weight", &layer.rms_att);
    tensors.emplace_back(p + "post_attention_layernorm.weight", &layer.rms_ffn);
  }
  tensors.emplace_back("model.norm.weight", &ck.rms_final);
  if (!c.shared_classifier) tensors.emplace_back("lm_head.weight", &ck.wcls);
  safetensors_write_tensors(out / "model.safetensors", tensors, options.type);

  write_file_atomic(out / "config.json", model_config_to_json(llama2c_model_config(c, options.type)).dump(2) + "\n");

  write_file_atomic(out / (is_sentencepiece(options.tokenizer) ? "tokenizer.model" : "tokenizer.bin"),
                    tokenizer_bytes);
}

}  // namespace shardq
