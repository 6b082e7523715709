// The NCCL probe's skip signal, on every machine (label unit, not multigpu:
// `ctest -L multigpu` on a CPU machine must be all skips); and the GPU
// requirement policy (common/gpu_requirement.h).
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "common/gpu_requirement.h"
#include "harness/comm/nccl/nccl_communicator.h"

namespace moe::comm {
namespace {

// Runs on every machine: the skip signal itself. No machine has 2^20 GPUs, so
// this is false everywhere with a reason naming what was needed.
TEST(NcclUsable, FalseWithReasonWhenTooFewGpus) {
  std::string reason;
  EXPECT_FALSE(ncclUsableImpl(1 << 20, &reason));
  EXPECT_EQ(reason.rfind("nccl backend needs 1048576 GPUs; ", 0), 0u) << reason;
  std::string again;
  ncclUsableImpl(1 << 20, &again);
  EXPECT_EQ(reason, again) << "the probe result is cached";
}


// MOE_HARNESS_REQUIRE_GPU turns the skip exit code into a failure.
TEST(GpuRequirement, EnvironmentTurnsSkipsIntoFailures) {
  unsetenv("MOE_HARNESS_REQUIRE_GPU");
  EXPECT_FALSE(gpuRequired());
  EXPECT_EQ(gpuUnavailableExitCode(), 77);
  EXPECT_EQ(gpuUnavailableMessage("no driver"), "SKIPPED: no driver");
  setenv("MOE_HARNESS_REQUIRE_GPU", "0", 1);
  EXPECT_FALSE(gpuRequired());
  setenv("MOE_HARNESS_REQUIRE_GPU", "1", 1);
  EXPECT_TRUE(gpuRequired());
  EXPECT_EQ(gpuUnavailableExitCode(), 1);
  EXPECT_EQ(gpuUnavailableMessage("no driver"), "FAILED (MOE_HARNESS_REQUIRE_GPU=1): no driver");
  unsetenv("MOE_HARNESS_REQUIRE_GPU");
}

}  // namespace
}  // namespace moe::comm
