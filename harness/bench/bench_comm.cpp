// bench_comm: what a 4-rank gloo job costs on this machine (issue 2).
//
//  BM_JobOverhead          launchLocal (fork) 4 ranks: rendezvous, one
//                          all_reduce of 1 float, teardown. Target < 0.5 s.
//  BM_JobOverheadExec      the same job with exec'd ranks (bench_rank_allreduce):
//                          every rank pays libtorch's ~0.6 s start-up.
//  BM_JobOverheadForkServer the same command line (bench_rank_allreduce)
//                          with LaunchOptions::spawn = kFork: the ranks are
//                          forked from the fork server this benchmark starts
//                          in main() (harness/launch/fork_server.h), as
//                          `moe-harness run` forks its run-plan ranks.
//  BM_PythonSpawnPattern   the Python pattern it replaces: mp.spawn of 4
//                          processes, init_process_group("gloo"), one
//                          all_reduce, destroy_process_group (wall time of
//                          the whole python3 command).
//  BM_AllReduce, BM_AllToAll  latency of one collective of `bytes` float32
//                          per rank, with the fingerprint verification on or
//                          off, measured inside the ranks.
//
// Collective timing: one launchLocal job per benchmark run. Every rank runs a
// warm-up, then max_iterations iterations of barrier + timed collective; the
// time of an iteration is the maximum over ranks (the collective is done when
// its slowest member is), gathered with an all_reduce(max) after the loop.
// Rank 0 writes the times into a buffer shared with the parent (mmap before
// fork), and the parent replays them with SetIterationTime, so every reported
// iteration is one real collective.
//
// The parent never runs torch code: it only forks. Torch's thread pools would
// otherwise be started before the fork and be unusable in the ranks.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "harness/bench/bench_process.h"
#include "harness/bench/one_allreduce.h"
#include "harness/launch/fork_server.h"
#include "harness/launch/launcher.h"
#include "harness/launch/rank_env.h"

namespace {

using Clock = std::chrono::steady_clock;
using moe::launch::LaunchOptions;
using moe::launch::LaunchResult;
using moe::launch::RankContext;

constexpr int kNumRanks = 4;
constexpr int kWarmupIterations = 5;
constexpr int64_t kMaxTimedIterations = int64_t{1} << 22;

// Launcher options that keep rank output out of the benchmark's report; the
// captured text is shown only when a job fails.
struct QuietJob {
  std::ostringstream out, err;
  LaunchOptions opts;
  explicit QuietJob(std::chrono::milliseconds timeout) {
    opts.nranks = kNumRanks;
    opts.timeout = timeout;
    opts.out = &out;
    opts.err = &err;
    opts.quiet = true;
  }
  std::string failure(const LaunchResult& r) const {
    std::string e = err.str();
    if (e.size() > 2000) e = "..." + e.substr(e.size() - 2000);
    return "job failed (exit " + std::to_string(r.exitCode()) + "): " + r.summary + "\n" + e;
  }
};

double maxRankSeconds(const LaunchResult& r) {
  double m = 0;
  for (const auto& s : r.ranks) m = std::max(m, s.seconds);
  return m;
}

// One whole job per iteration; `launch` starts and waits for it, its ranks
// started the `spawn` way (LaunchResult::spawn).
void benchJob(benchmark::State& state, std::chrono::seconds timeout, const std::string& spawn,
              const std::function<LaunchResult(const LaunchOptions&)>& launch) {
  double rankSeconds = 0;
  for (auto _ : state) {
    QuietJob job(timeout);
    LaunchResult r = launch(job.opts);
    if (!r.ok) {
      state.SkipWithError(job.failure(r).c_str());
      break;
    }
    if (r.spawn != spawn) {
      state.SkipWithError(("ranks started by " + r.spawn + ", not " + spawn + " (" +
                           moe::launch::forkServerUnavailableReason() + ")")
                              .c_str());
      break;
    }
    rankSeconds += maxRankSeconds(r);
  }
  state.counters["ranks"] = kNumRanks;
  // Slowest rank's start-to-exit time; the rest of a job is the launcher's.
  state.counters["rank_s"] = benchmark::Counter(rankSeconds, benchmark::Counter::kAvgIterations);
}

void BM_JobOverhead(benchmark::State& state) {
  benchJob(state, std::chrono::seconds(60), "fork", [](const LaunchOptions& opts) {
    return moe::launch::launchLocal(
        opts, [](const RankContext&) { return moe::bench::oneAllReduceRank(); });
  });
}
BENCHMARK(BM_JobOverhead)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_JobOverheadExec(benchmark::State& state) {
  benchJob(state, std::chrono::seconds(120), "exec", [](const LaunchOptions& opts) {
    return moe::launch::launchProgram(opts, {MOE_BENCH_RANK_ALLREDUCE});
  });
}
BENCHMARK(BM_JobOverheadExec)->UseRealTime()->Unit(benchmark::kMillisecond)->Iterations(2);

void BM_JobOverheadForkServer(benchmark::State& state) {
  benchJob(state, std::chrono::seconds(60), "fork_server", [](LaunchOptions opts) {
    opts.spawn = moe::launch::SpawnMode::kFork;
    return moe::launch::launchProgram(opts, {MOE_BENCH_RANK_ALLREDUCE});
  });
}
BENCHMARK(BM_JobOverheadForkServer)->UseRealTime()->Unit(benchmark::kMillisecond);

// --- the Python pattern (bench_process.h) --------------------------------

void BM_PythonSpawnPattern(benchmark::State& state) {
  for (auto _ : state) {
    const auto r = moe::bench::runPythonAnchor(MOE_BENCH_PYTHON, kNumRanks);
    if (!r.error.empty()) {
      state.SkipWithError(r.error.c_str());
      break;
    }
  }
  state.counters["ranks"] = kNumRanks;
}
BENCHMARK(BM_PythonSpawnPattern)->UseRealTime()->Unit(benchmark::kMillisecond)->Iterations(1);

// --- collective latency ----------------------------------------------------

enum class Collective { kAllReduce, kAllToAll };

// A MAP_SHARED buffer created before the fork: rank 0 writes, the parent reads.
class SharedDoubles {
 public:
  explicit SharedDoubles(size_t n) : n_(n) {
    void* p = mmap(nullptr, bytes(), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    data_ = p == MAP_FAILED ? nullptr : static_cast<double*>(p);
  }
  ~SharedDoubles() {
    if (data_) munmap(data_, bytes());
  }
  SharedDoubles(const SharedDoubles&) = delete;
  SharedDoubles& operator=(const SharedDoubles&) = delete;
  double* data() const { return data_; }

 private:
  size_t bytes() const { return std::max<size_t>(n_, 1) * sizeof(double); }
  size_t n_;
  double* data_;
};

// The rank side: warm-up, then `iters` timed collectives; returns the exit code.
// times: [iters] shared with the parent, written by rank 0 only.
int timeCollectiveRank(const RankContext& ctx, Collective which, int64_t bytes, bool verify,
                       int64_t iters, double* times) {
  // verify: on in the mode the launcher chose (benchCollective: in-band or trace).
  at::set_num_threads(1);
  moe::comm::CommOptions co;
  co.verify = verify;
  auto world = moe::launch::initWorld(moe::launch::rankEnvFromEnvironment(), co);
  world->setVerify(verify);  // wins over MOE_HARNESS_VERIFY
  const int64_t numel = bytes / static_cast<int64_t>(sizeof(float));
  // value = f(rank, index), as test data would be.
  at::Tensor src = at::arange(numel, at::kFloat).add_(static_cast<double>(ctx.rank) * numel);
  at::Tensor buf = src.clone();
  at::Tensor out = at::empty_like(src);
  const std::vector<int64_t> equalSplits;  // numel is a multiple of the world size

  at::Tensor elapsed = at::zeros({iters}, at::kDouble);
  double* e = elapsed.data_ptr<double>();
  auto once = [&]() -> double {
    // all_reduce works in place: restore the input so every iteration reduces
    // the same values (untimed).
    if (which == Collective::kAllReduce) buf.copy_(src);
    world->barrier();
    auto t0 = Clock::now();
    if (which == Collective::kAllReduce) {
      world->allReduce(buf);
    } else {
      world->allToAllSingle(out, src, equalSplits, equalSplits);
    }
    return std::chrono::duration<double>(Clock::now() - t0).count();
  };
  for (int i = 0; i < kWarmupIterations; ++i) once();
  for (int64_t i = 0; i < iters; ++i) e[i] = once();
  world->allReduce(elapsed, moe::comm::ReduceOp::kMax);
  if (ctx.rank == 0) std::memcpy(times, e, static_cast<size_t>(iters) * sizeof(double));
  return 0;
}

void benchCollective(benchmark::State& state, Collective which) {
  const int64_t bytes = state.range(0);
  // 0 off, 1 in-band (the fingerprint exchange), 2 trace (the launcher
  // compares the ranks' traces; communicator.h "Verification").
  const int64_t verifyMode = state.range(1);
  const bool verify = verifyMode != 0;
  const int64_t iters = state.max_iterations;
  if (iters > kMaxTimedIterations) {
    state.SkipWithError("too many iterations requested for one job");
    return;
  }
  SharedDoubles times(static_cast<size_t>(iters));
  if (!times.data()) {
    state.SkipWithError("mmap of the shared result buffer failed");
    return;
  }
  QuietJob job(std::chrono::seconds(300));
  job.opts.traceVerify = verifyMode == 2;
  LaunchResult r = moe::launch::launchLocal(job.opts, [&](const RankContext& ctx) {
    return timeCollectiveRank(ctx, which, bytes, verify, iters, times.data());
  });
  if (!r.ok) {
    state.SkipWithError(job.failure(r).c_str());
    return;
  }
  int64_t i = 0;
  for (auto _ : state) state.SetIterationTime(times.data()[i++]);

  std::vector<double> sorted(times.data(), times.data() + iters);
  std::sort(sorted.begin(), sorted.end());
  state.counters["ranks"] = kNumRanks;
  state.counters["min_us"] = sorted.front() * 1e6;
  state.counters["p50_us"] = sorted[sorted.size() / 2] * 1e6;
  // Payload per rank over the collective's time (not bus bandwidth).
  state.SetBytesProcessed(state.iterations() * bytes);
}

void BM_AllReduce(benchmark::State& state) { benchCollective(state, Collective::kAllReduce); }
void BM_AllToAll(benchmark::State& state) { benchCollective(state, Collective::kAllToAll); }

// Args: {payload bytes of float32 per rank, verification: 0 off, 1 in-band, 2 trace}.
void collectiveArgs(benchmark::internal::Benchmark* b) {
  b->ArgNames({"bytes", "verify"});
  for (int64_t bytes : {int64_t{4096}, int64_t{4} << 20})
    for (int64_t verify : {1, 2, 0}) b->Args({bytes, verify});
  b->UseManualTime()->Unit(benchmark::kMicrosecond);
}
BENCHMARK(BM_AllReduce)->Apply(collectiveArgs);
BENCHMARK(BM_AllToAll)->Apply(collectiveArgs);

}  // namespace

// The fork server first, while this process has one thread; it serves
// bench_rank_allreduce's command line (BM_JobOverheadForkServer).
int main(int argc, char** argv) {
  std::string why;
  if (!moe::launch::startForkServer(MOE_BENCH_RANK_ALLREDUCE, &moe::bench::oneAllReduceMain, &why))
    std::cerr << "bench_comm: no fork server (" << why << "): BM_JobOverheadForkServer reports an error" << std::endl;
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
