// Library-wide entry points of libcris_edge_kernels.so (version, status names, last error).
#include "cris_args.h"
#include "cris_edge_kernels.h"
#include "cris_status.h"

extern "C" {

int cris_abi_version(void) { return CRIS_EDGE_ABI_VERSION; }

const char* cris_status_string(int status) { return cris::status_string(status); }

const char* cris_last_error(void) { return cris::last_error(); }

}  // extern "C"
