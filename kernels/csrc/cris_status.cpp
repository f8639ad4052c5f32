#include "cris_status.h"

namespace cris {

namespace {
thread_local std::string t_last_error;
}

int fail(int status, const std::string& message) {
    t_last_error = message;
    return status;
}

void clear_error() { t_last_error.clear(); }

const char* last_error() { return t_last_error.c_str(); }

}  // namespace cris
