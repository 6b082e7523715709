#include "common/error.h"

namespace moe::detail {

void assertFail(const char* file, int line, const std::string& msg) {
  throw InternalError(moe::str("internal error at ", file, ":", line, ": ", msg));
}

}  // namespace moe::detail
