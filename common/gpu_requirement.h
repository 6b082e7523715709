#pragma once
// What a test or run does when it needs GPUs the machine cannot give it
// (libtorch without CUDA, no driver, fewer GPUs than ranks).
//
// By default it is SKIPPED with the reason (exit 77, ctest's
// SKIP_RETURN_CODE; GTEST_SKIP in GoogleTest): never passed, never failed,
// so `ctest -L multigpu` on a CPU machine is all skips. With the environment
// variable MOE_HARNESS_REQUIRE_GPU=1 every such skip becomes a failure, so a
// GPU CI whose CUDA set-up is broken cannot go green on skips.
#include <string>

namespace moe {

// MOE_HARNESS_REQUIRE_GPU is set to a value other than "" or "0".
bool gpuRequired();

// The exit code of a process that cannot run for lack of GPUs: 77 (skip),
// or 1 when gpuRequired().
int gpuUnavailableExitCode();

// "SKIPPED: <reason>" or "FAILED (MOE_HARNESS_REQUIRE_GPU=1): <reason>": the
// line such a process prints.
std::string gpuUnavailableMessage(const std::string& reason);

}  // namespace moe

// In a GoogleTest body or SetUp: skip with `reason`, or fail under
// MOE_HARNESS_REQUIRE_GPU=1. Returns from the calling function either way.
#define MOE_GPU_UNAVAILABLE(reason)                                                             \
  do {                                                                                          \
    if (::moe::gpuRequired()) {                                                                 \
      GTEST_FAIL() << "MOE_HARNESS_REQUIRE_GPU=1 and this test cannot run: " << (reason);       \
    } else {                                                                                    \
      GTEST_SKIP() << (reason);                                                                 \
    }                                                                                           \
  } while (0)
