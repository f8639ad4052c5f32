// Per-thread record of the last error of the C ABI (cris_last_error / cris_host_last_error).
// Host-only C++, no CUDA dependency.
#pragma once

#include <string>

namespace cris {

// Stores `message` as this thread's last error and returns `status` (for `return fail(...)`).
int fail(int status, const std::string& message);

// Clears this thread's last error (at the start of every successful entry point).
void clear_error();

// This thread's last error message ("" if none).
const char* last_error();

}  // namespace cris
