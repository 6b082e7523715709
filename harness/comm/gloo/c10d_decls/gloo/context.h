#pragma once
// Declarations only; see ../README.md. ProcessGroupGloo.hpp's inline
// setTimeout() calls Context::setTimeout; the definition is libtorch's.
#include <chrono>

namespace gloo {
class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);
};
}  // namespace gloo
