// journal.jsonl reader and appender; see checkpoint_journal.hpp.
#include "common/checkpoint_journal.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string_view>

#include <fmt/format.h>

#include "common/atomic_file.hpp"
#include "common/error.hpp"
#include "common/json_text.hpp"
#include "common/sha256.hpp"

namespace shardq {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string entry_line(const json& entry) {
  return json{{"entry", entry}, {"sha256", sha256_hex(entry.dump())}}.dump() + "\n";
}

void write_all(int fd, const std::string& text, const fs::path& path) {
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    io_check(n > 0, "cannot append to '{}': {}", path.string(), std::strerror(errno));
    done += static_cast<size_t>(n);
  }
  io_check(::fsync(fd) == 0, "fsync of '{}' failed: {}", path.string(), std::strerror(errno));
}

UniqueFd open_append(const fs::path& path) {
  UniqueFd file{::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC)};
  io_check(bool(file), "cannot open '{}' for appending: {}", path.string(), std::strerror(errno));
  return file;
}

// A name inside the checkpoint directory: relative, no empty, "." or ".." component. The
// journal names files a later run removes (--force, a finished job), so a crafted or damaged
// line must not reach outside the directory.
bool inside_directory(const std::string& name) {
  if (name.empty() || name.front() == '/') return false;
  size_t begin = 0;
  while (begin <= name.size()) {
    const size_t end = std::min(name.find('/', begin), name.size());
    const std::string_view part(name.data() + begin, end - begin);
    if (part.empty() || part == "." || part == "..") return false;
    begin = end + 1;
  }
  return true;
}

void check_hidden_files(const json& hidden, const std::string& context) {
  try {
    for (const json& f : hidden.at("files")) {
      const std::string file = f.at("file").get<std::string>();
      if (!inside_directory(file))
        throw io_error(fmt::format("{}: hidden-state file '{}' is not a name inside the checkpoint directory", context, file));
    }
  } catch (const json::exception& e) {
    throw io_error(fmt::format("{}: bad hidden-state entry: {}", context, e.what()));
  }
}

}  // namespace

json journal_shard_to_json(const JournalShard& s) {
  return {{"index", s.index}, {"file", s.file},     {"sha256", s.sha256},
          {"bytes", s.bytes}, {"layers", s.layers}, {"records", s.records}};
}

JournalShard journal_shard_from_json(const json& j, const std::string& context) {
  try {
    JournalShard s;
    s.index = j.at("index").get<int>();
    s.file = j.at("file").get<std::string>();
    s.sha256 = j.at("sha256").get<std::string>();
    s.bytes = j.at("bytes").get<int64_t>();
    s.layers = j.at("layers").get<std::vector<int>>();
    s.records = j.at("records");
    if (!inside_directory(s.file) || s.file.find('/') != std::string::npos)
      throw io_error(fmt::format("{}: shard file name '{}' is not a plain file name", context, s.file));
    return s;
  } catch (const json::exception& e) {
    throw io_error(fmt::format("{}: bad shard entry: {}", context, e.what()));
  }
}

bool journal_exists(const fs::path& dir) {
  std::error_code ec;
  return fs::is_regular_file(dir / journal_file_name, ec);
}

Journal journal_read(const fs::path& dir) {
  const fs::path path = dir / journal_file_name;
  std::ifstream in(path, std::ios::binary);
  io_check(static_cast<bool>(in), "cannot read '{}'", path.string());
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();

  Journal j;
  size_t pos = 0;
  int line_no = 0;
  while (pos < text.size()) {
    ++line_no;
    const size_t nl = text.find('\n', pos);
    const std::string context = fmt::format("'{}' line {}", path.string(), line_no);
    if (nl == std::string::npos) {  // the append a crash interrupted
      j.torn_tail = true;
      break;
    }
    const std::string line = text.substr(pos, nl - pos);
    std::string why;
    const json parsed = parse_json_text(line, why);
    if (parsed.is_discarded()) throw io_error(fmt::format("{}: not valid JSON ({}); the journal is damaged", context, why));
    if (line_no == 1) {
      if (!parsed.is_object() || parsed.value("journal", "") != journal_format)
        throw io_error(fmt::format("{}: not a shardq journal header", context));
      if (parsed.value("version", 0) != journal_version)
        throw io_error(fmt::format("{}: journal version {} is not supported (this shardq writes {})", context,
                                   parsed.value("version", 0), journal_version));
      j.identity = parsed.at("identity");
    } else {
      if (!parsed.is_object() || !parsed.contains("entry") || !parsed.contains("sha256") ||
          !parsed["sha256"].is_string() || parsed["sha256"].get<std::string>() != sha256_hex(parsed["entry"].dump()))
        throw io_error(fmt::format("{}: checksum mismatch; the journal is damaged", context));
      const json& entry = parsed["entry"];
      if (entry.contains("shard")) {
        JournalShard s = journal_shard_from_json(entry["shard"], context);
        j.shards[s.index] = std::move(s);
      } else if (entry.contains("measure")) {
        j.measure = entry["measure"];
      } else if (entry.contains("hidden") && entry["hidden"].contains("layer")) {
        check_hidden_files(entry["hidden"], context);
        j.hidden[entry["hidden"]["layer"].get<int>()] = entry["hidden"];
      } else {
        throw io_error(fmt::format("{}: unknown journal entry", context));
      }
    }
    pos = nl + 1;
    j.valid_bytes = static_cast<int64_t>(pos);
  }
  if (line_no == 0 || j.identity.is_null()) throw io_error(fmt::format("'{}' has no header line", path.string()));
  return j;
}

std::string commit_record_name(const std::string& shard_file) { return shard_file + ".commit.json"; }

void commit_record_write(const fs::path& dir, const JournalShard& s, const std::string& identity_sha256) {
  write_file_atomic(dir / commit_record_name(s.file),
                    json{{"identity_sha256", identity_sha256}, {"shard", journal_shard_to_json(s)}}.dump() + "\n");
}

std::optional<JournalShard> commit_record_read(const fs::path& dir, const std::string& shard_file,
                                               const std::string& identity_sha256) {
  const fs::path path = dir / commit_record_name(shard_file);
  std::error_code ec;
  if (!fs::exists(path, ec)) return std::nullopt;
  // Written atomically, so a damaged record is not a crash's trace: whatever it is, the
  // shard it would describe is redone rather than trusted.
  try {
    const json j = json_file_read(path, path.string());
    if (j.at("identity_sha256").get<std::string>() != identity_sha256) return std::nullopt;
    JournalShard s = journal_shard_from_json(j.at("shard"), path.string());
    if (s.file != shard_file || s.sha256.empty()) return std::nullopt;
    return s;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

void commit_record_remove(const fs::path& dir, const std::string& shard_file) {
  std::error_code ec;
  fs::remove(dir / commit_record_name(shard_file), ec);
  io_check(!ec, "cannot remove '{}': {}", (dir / commit_record_name(shard_file)).string(), ec.message());
}

JournalWriter JournalWriter::create(const fs::path& dir, const json& identity) {
  const fs::path path = dir / journal_file_name;
  write_file_atomic(path, json{{"journal", journal_format}, {"version", journal_version}, {"identity", identity}}.dump() + "\n");
  return JournalWriter(path, open_append(path));
}

JournalWriter JournalWriter::resume(const fs::path& dir, const Journal& j) {
  const fs::path path = dir / journal_file_name;
  if (j.torn_tail) {
    io_check(::truncate(path.c_str(), static_cast<off_t>(j.valid_bytes)) == 0, "cannot truncate '{}': {}",
             path.string(), std::strerror(errno));
  }
  return JournalWriter(path, open_append(path));
}

void JournalWriter::append_entry(const json& entry) { write_all(file_.get(), entry_line(entry), path_); }

void JournalWriter::append_shard(const JournalShard& s) { append_entry({{"shard", journal_shard_to_json(s)}}); }

void JournalWriter::append_measure(const json& decision) { append_entry({{"measure", decision}}); }

void JournalWriter::append_hidden(const json& snapshot) { append_entry({{"hidden", snapshot}}); }

}  // namespace shardq
