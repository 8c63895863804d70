// JSON read from outside the process (REST bodies, job specs, model and checkpoint files):
// parsed with a depth limit, and described in error messages without echoing it.
//
// nlohmann::json parses iteratively, but its dump(), copy and comparison recurse once per
// nesting level: a 200 KB body of "[[[[...]]]]" parses fine and then overflows the stack
// wherever it is printed or copied. No file or request shardq reads nests deeper than a few
// levels, so documents deeper than max_json_depth are refused where they are parsed.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace shardq {

inline constexpr int max_json_depth = 64;

// The document in `text`; on failure a discarded value (is_discarded()) and `error` says why
// ("syntax error at byte 12: ..." or "nested deeper than 64 levels").
nlohmann::json parse_json_text(std::string_view text, std::string& error);

// The JSON document in the file at `path`, parsed as above. io_error "cannot read WHAT" or
// "WHAT: not valid JSON (why)", where `what` names the file for the user ("config.json
// (/models/x/config.json)", "safetensors index '...'").
nlohmann::json json_file_read(const std::filesystem::path& path, std::string_view what);

// "an array", "an object", "a string", ... for messages.
std::string_view json_kind(const nlohmann::json& j);
// A value for an error message: a scalar as JSON (a string cut to 64 characters), an array
// or object by its kind only.
std::string json_shown(const nlohmann::json& j);

}  // namespace shardq
