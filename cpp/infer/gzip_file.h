// Whole-file reading, plain or gzip-compressed (zlib).
#pragma once

#include <string>

namespace cris_infer {

// The decompressed bytes of the gzip file `path`; throws std::runtime_error naming the file and
// the problem (missing, not gzip, truncated).
std::string read_gzip_file(const std::string& path);

// The bytes of `path`; throws std::runtime_error naming the file when it cannot be read.
std::string read_file(const std::string& path);

}  // namespace cris_infer
