#pragma once
// The rank body of the job-overhead benchmarks: join the world, all_reduce one
// float, leave. Shared by the forked ranks of bench_comm (launchLocal), the
// exec'd helper bench_rank_allreduce (launchProgram) and the same helper's
// command line forked from bench_comm's fork server, so the three benchmarks
// differ only in how the ranks start.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <exception>
#include <iostream>

#include "harness/launch/rank_env.h"

namespace moe::bench {

// Returns the rank's exit code: 0, or 2 when the sum is wrong.
inline int oneAllReduceRank() {
  // 4 ranks share 2 cores; intra-op threads would only oversubscribe them.
  at::set_num_threads(1);
  auto world = launch::initWorld(launch::rankEnvFromEnvironment(), comm::CommOptions{});
  at::Tensor t = at::ones({1}, at::kFloat);
  world->allReduce(t);
  return t.item<float>() == static_cast<float>(world->size()) ? 0 : 2;
}

// The rank's main(): exec'd (bench_rank_allreduce) or forked from the fork
// server (bench_comm's BM_JobOverheadForkServer).
inline int oneAllReduceMain(int /*argc*/, char** argv) {
  try {
    return oneAllReduceRank();
  } catch (const std::exception& e) {
    std::cerr << argv[0] << ": " << e.what() << std::endl;
    return 1;
  }
}

}  // namespace moe::bench
