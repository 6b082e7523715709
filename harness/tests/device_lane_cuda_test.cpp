// The CUDA device lane on real ranks (ctest label multigpu). Where CUDA
// cannot run, every test is SKIPPED with the reason (comm::cudaUsable /
// ncclUsable); none passes without a GPU.
//  - gloo on the CUDA lane: every collective on CUDA tensors (staged through
//    the host), results on the device, two ranks sharing one GPU;
//  - run-plan on the CUDA lane end to end (gloo sharing a GPU; nccl with one
//    GPU per rank; the fsdp and zero3 wrappers), every check passing and the
//    result recording device cuda.
#include <gtest/gtest.h>

#include <sstream>

#include "common/gpu_requirement.h"
#include "harness/tests/rank_test_util.h"

using namespace moe;

namespace {

const std::string kHarness = MOE_HARNESS_BIN;
const std::string kSource = MOE_SOURCE_DIR;

#define MOE_REQUIRE_GPUS(n)                                                     \
  do {                                                                          \
    std::string why_;                                                           \
    if (!comm::cudaUsable(n, &why_)) MOE_GPU_UNAVAILABLE("CUDA lane: " + why_); \
  } while (0)

TEST(CudaLane, GlooCollectivesTakeAndReturnCudaTensorsOnASharedGpu) {
  MOE_REQUIRE_GPUS(1);
  auto run = ranktest::runRanks(2, [](const launch::RankContext& ctx) {
    comm::CommOptions o;
    o.deviceType = "cuda";
    auto world = ranktest::rankWorld(o);
    const at::Device dev = world->device();
    RANK_CHECK(dev.is_cuda(), "device ", dev);
    const auto f = at::TensorOptions(at::kFloat).device(dev);
    const int r = ctx.rank;
    at::Tensor t = at::full({3}, static_cast<float>(r + 1), f);
    world->allReduce(t);
    RANK_CHECK(t.is_cuda() && t.cpu().eq(3.0f).all().item<bool>(), "all_reduce ", t);
    at::Tensor b = at::full({2}, static_cast<float>(10 * r), f);
    world->broadcast(b, 1);
    RANK_CHECK(b.cpu().eq(10.0f).all().item<bool>(), "broadcast ", b);
    // Uneven all_gather: rank r contributes r + 1 rows of value r.
    at::Tensor in = at::full({r + 1, 2}, static_cast<float>(r), f);
    at::Tensor out = at::empty({3, 2}, f);
    world->allGather(out, in, {1, 2});
    RANK_CHECK(out.cpu().equal(at::tensor({0.f, 0.f, 1.f, 1.f, 1.f, 1.f}).view({3, 2})), "all_gather ", out);
    // all_to_all: rank r sends row value 10r + j to rank j.
    at::Tensor send = at::tensor({10.f * r, 10.f * r + 1}).to(dev).view({2, 1});
    at::Tensor recv = at::empty({2, 1}, f);
    world->allToAllSingle(recv, send, {1, 1}, {1, 1});
    RANK_CHECK(recv.cpu().view({2}).equal(at::tensor({0.f + r, 10.f + r})), "all_to_all ", recv);
    at::Tensor rs = at::empty({1, 2}, f);
    world->reduceScatter(rs, at::ones({2, 2}, f));
    RANK_CHECK(rs.cpu().eq(2.0f).all().item<bool>(), "reduce_scatter ", rs);
    return 0;
  });
  ASSERT_TRUE(run.result.ok) << run.all();
}

struct ExecRun {
  launch::LaunchResult result;
  std::string out, err;
  std::string all() const { return result.summary + "\n--- stdout\n" + out + "--- stderr\n" + err; }
};

ExecRun runPlan(int n, std::vector<std::string> extra) {
  std::vector<std::string> args = {kHarness, "run-plan", "--config", kSource + "/cases/configs/tiny_moe.json",
                                   "--steps", "2"};
  args.insert(args.end(), extra.begin(), extra.end());
  std::ostringstream out, err;
  launch::LaunchOptions o;
  o.nranks = n;
  o.timeout = std::chrono::seconds(240);
  o.out = &out;
  o.err = &err;
  o.quiet = true;
  ExecRun r{launch::launchProgram(o, args), "", ""};
  r.out = out.str();
  r.err = err.str();
  return r;
}

void expectPassOnCuda(const ExecRun& r) {
  ASSERT_TRUE(r.result.ok) << r.all();
  EXPECT_NE(r.out.find("\"device\": \"cuda\""), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"passed\": true"), std::string::npos) << r.out;
}

TEST(CudaLane, RunPlanEp2OverGlooSharingOneGpuPasses) {
  MOE_REQUIRE_GPUS(1);
  expectPassOnCuda(runPlan(2, {"--mesh", "{\"ep\":2}", "--plan", kSource + "/cases/plans/ep.json", "--backend", "gloo",
                               "--device", "cuda"}));
}

TEST(CudaLane, RunPlanEp2OverNcclPasses) {
  std::string why;
  if (!comm::ncclUsable(2, &why)) MOE_GPU_UNAVAILABLE(why);
  expectPassOnCuda(runPlan(2, {"--mesh", "{\"ep\":2}", "--plan", kSource + "/cases/plans/ep.json", "--backend", "nccl"}));
}

TEST(CudaLane, RunPlanFsdpAndZero3OnTheCudaLanePassWithMeasuredMemory) {
  MOE_REQUIRE_GPUS(1);
  for (const char* wrapper : {"fsdp", "zero3"})
    expectPassOnCuda(runPlan(2, {"--mesh", "{\"dp\":2}", "--plan", kSource + "/cases/plans/replicated.json",
                                 "--backend", "gloo", "--device", "cuda", "--wrapper", wrapper}));
}

}  // namespace
