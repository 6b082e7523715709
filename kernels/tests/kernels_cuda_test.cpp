// The kernels on the CUDA lane (ctest label multigpu): the path each call
// takes on a GPU and its results against the CPU loop. Without a usable GPU
// every test is SKIPPED with the reason; it never passes.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "kernels/grouped_matmul.h"
#include "common/gpu_requirement.h"
#include "kernels/permute.h"
#include "kernels/routing.h"

namespace moe::kernels {
namespace {

#define MOE_REQUIRE_CUDA()                                                                      \
  if (!torch::cuda::is_available())                                                             \
  MOE_GPU_UNAVAILABLE("CUDA is not available in this process (torch::cuda::is_available() is false: " \
                      "no driver or no GPU)")

TEST(KernelsCuda, GroupedMatmulTakesGroupedMmWhenAlignedAndMatchesTheCpuLoop) {
  MOE_REQUIRE_CUDA();
  torch::manual_seed(11);
  std::vector<int64_t> sizes{3, 0, 5, 2};
  auto x = torch::randn({10, 8});
  auto w = torch::randn({4, 6, 8});
  auto xc = x.cuda(), wc = w.cuda();
  EXPECT_EQ(groupedMatmulPath(xc, wc), GroupedMatmulPath::kGroupedMm);
  auto want = groupedMatmul(x, w, sizes);
  auto got = groupedMatmul(xc, wc, sizes).cpu();
  EXPECT_TRUE(torch::allclose(got, want, 1e-4, 1e-5)) << (got - want).abs().max().item<float>();
}

TEST(KernelsCuda, GroupedMatmulFallsBackToTheLoopWhenUnaligned) {
  MOE_REQUIRE_CUDA();
  auto x = torch::randn({4, 6}).cuda();  // 24-byte rows: not 16-byte aligned
  auto w = torch::randn({2, 3, 6}).cuda();
  EXPECT_EQ(groupedMatmulPath(x, w), GroupedMatmulPath::kLoop);
  auto got = groupedMatmul(x, w, {1, 3}).cpu();
  auto want = groupedMatmul(x.cpu(), w.cpu(), {1, 3});
  EXPECT_TRUE(torch::allclose(got, want, 1e-4, 1e-5));
}

TEST(KernelsCuda, PermutationAndRoutingStayOnTheDeviceAndMatchTheCpu) {
  MOE_REQUIRE_CUDA();
  auto logits = torch::randn({12, 4});
  auto cpu = topkRoute(logits, {/*topK=*/2, /*normTopkProb=*/true});
  auto gpu = topkRoute(logits.cuda(), {/*topK=*/2, /*normTopkProb=*/true});
  ASSERT_TRUE(gpu.topkIdx.is_cuda());
  EXPECT_TRUE(torch::equal(gpu.topkIdx.cpu(), cpu.topkIdx));
  auto planCpu = makePermutePlan(cpu.topkIdx, 4);
  auto planGpu = makePermutePlan(gpu.topkIdx, 4);
  EXPECT_TRUE(planGpu.tokenOfRow.is_cuda());
  EXPECT_EQ(planGpu.numTokensPerExpertHost, planCpu.numTokensPerExpertHost);
  auto x = torch::randn({12, 8});
  EXPECT_TRUE(torch::equal(permuteTokens(x.cuda(), planGpu).cpu(), permuteTokens(x, planCpu)));
}

}  // namespace
}  // namespace moe::kernels
