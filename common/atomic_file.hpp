// Atomic publication of files: write NAME.tmp, fsync it, rename it to NAME, fsync the
// directory. A reader sees either no file or the complete one, also after a crash — which
// is what lets a checkpoint directory without manifest.json mean "incomplete".
#pragma once

#include <filesystem>
#include <string_view>

namespace shardq {

// The temporary name a file is written under before publish_file(): "NAME.tmp".
std::filesystem::path temp_path_for(const std::filesystem::path& final_path);
// temp_path_for(final_path) with whatever was there removed first: a temp an interrupted run
// left, or a symlink someone put in its place, which creating the file would follow and
// truncate. Throws io_error when it cannot be removed.
std::filesystem::path temp_path_fresh(const std::filesystem::path& final_path);
// fsync(tmp), rename(tmp, final), fsync(directory of final). Throws io_error naming the file.
void publish_file(const std::filesystem::path& tmp, const std::filesystem::path& final_path);
// Writes `content` to temp_path_for(path) and publishes it.
void write_file_atomic(const std::filesystem::path& path, std::string_view content);

}  // namespace shardq
