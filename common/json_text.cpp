#include "common/json_text.hpp"

#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "common/error.hpp"

namespace shardq {

using json = nlohmann::json;

json parse_json_text(std::string_view text, std::string& error) {
  error.clear();
  bool too_deep = false;
  // A structure that starts beyond the limit is discarded whole: the parser still scans its
  // text but never builds it.
  const json::parser_callback_t limit = [&](int depth, json::parse_event_t event, json&) {
    if ((event == json::parse_event_t::object_start || event == json::parse_event_t::array_start) &&
        depth >= max_json_depth) {
      too_deep = true;
      return false;
    }
    return true;
  };
  try {
    json j = json::parse(text.begin(), text.end(), limit);
    if (!too_deep) return j;
    error = fmt::format("nested deeper than {} levels", max_json_depth);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for numbers like 1e999
    error = e.what();
    // "[json.exception.parse_error.101] parse error at line 1, column 2: ..." → from "parse error".
    if (const size_t at = error.find("] "); at != std::string::npos) error.erase(0, at + 2);
  }
  return json(json::value_t::discarded);
}

json json_file_read(const std::filesystem::path& path, std::string_view what) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) throw io_error(fmt::format("cannot read {}: not a regular file", what));
  std::ifstream in(path, std::ios::binary);
  if (!in) throw io_error(fmt::format("cannot read {}", what));
  std::stringstream text;
  text << in.rdbuf();
  std::string why;
  json j = parse_json_text(text.str(), why);
  if (j.is_discarded()) throw io_error(fmt::format("{}: not valid JSON ({})", what, why));
  return j;
}

std::string_view json_kind(const json& j) {
  switch (j.type()) {
    case json::value_t::null: return "null";
    case json::value_t::object: return "an object";
    case json::value_t::array: return "an array";
    case json::value_t::string: return "a string";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned: return "an integer";
    case json::value_t::number_float: return "a float";
    default: return "a value of another type";
  }
}

std::string json_shown(const json& j) {
  if (j.is_array() || j.is_object()) return std::string(json_kind(j));
  if (j.is_string() && j.get_ref<const std::string&>().size() > 64)
    return json(j.get_ref<const std::string&>().substr(0, 64)).dump(-1, ' ', false, json::error_handler_t::replace) + "...";
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace shardq
