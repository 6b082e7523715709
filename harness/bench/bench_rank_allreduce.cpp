// One rank of the exec'd job-overhead benchmark (BM_JobOverheadExec): a fresh
// process per rank, so each pays libtorch's start-up. Run under a launcher
// (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT in the environment).
#include <exception>
#include <iostream>

#include "harness/bench/one_allreduce.h"

int main() {
  try {
    return moe::bench::oneAllReduceRank();
  } catch (const std::exception& e) {
    std::cerr << "bench_rank_allreduce: " << e.what() << std::endl;
    return 1;
  }
}
