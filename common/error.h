#pragma once
// The two error channels of the project (see docs/design.md):
//  - HarnessError: user errors (config, case, checkpoint, CLI, impossible
//    mesh, collective mismatch between ranks). Carries a context chain so the
//    message names where the problem is ("case foo.json: mesh: ...").
//  - MOE_ASSERT / MOE_ASSERT_EQ: internal invariants (bugs). They print both
//    compared values and the source location, then throw InternalError.
#include <sstream>
#include <stdexcept>
#include <string>

namespace moe {

class HarnessError : public std::runtime_error {
 public:
  explicit HarnessError(const std::string& msg) : std::runtime_error(msg) {}
  // Returns a copy whose message is prefixed by `where: `, so callers up the
  // stack can add context without losing the original detail.
  HarnessError withContext(const std::string& where) const {
    return HarnessError(where + ": " + what());
  }
};

class InternalError : public std::logic_error {
 public:
  explicit InternalError(const std::string& msg) : std::logic_error(msg) {}
};

namespace detail {
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
[[noreturn]] void assertFail(const char* file, int line, const std::string& msg);
}  // namespace detail

// Builds a message from any streamable pieces: moe::str("rank ", r, ": ...").
template <typename... Args>
std::string str(const Args&... args) {
  return detail::concat(args...);
}

// Throws HarnessError with a message built from streamable pieces.
template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  throw HarnessError(detail::concat(args...));
}

}  // namespace moe

#define MOE_ASSERT(cond, ...)                                                  \
  do {                                                                         \
    if (!(cond))                                                               \
      ::moe::detail::assertFail(__FILE__, __LINE__,                            \
                                ::moe::str("assertion `" #cond "` failed. ",   \
                                           ##__VA_ARGS__));                    \
  } while (0)

#define MOE_ASSERT_EQ(a, b, ...)                                               \
  do {                                                                         \
    const auto& moe_a_ = (a);                                                  \
    const auto& moe_b_ = (b);                                                  \
    if (!(moe_a_ == moe_b_))                                                   \
      ::moe::detail::assertFail(                                               \
          __FILE__, __LINE__,                                                  \
          ::moe::str("assertion `" #a " == " #b "` failed: ", moe_a_, " vs ",  \
                     moe_b_, ". ", ##__VA_ARGS__));                            \
  } while (0)
