// One rank of the exec'd job-overhead benchmark (BM_JobOverheadExec): a fresh
// process per rank, so each pays libtorch's start-up. Run under a launcher
// (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT in the environment).
#include "harness/bench/one_allreduce.h"

int main(int argc, char** argv) { return moe::bench::oneAllReduceMain(argc, argv); }
