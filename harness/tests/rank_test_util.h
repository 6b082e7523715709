#pragma once
// Helpers for tests that run real ranks (forked with launchLocal).
//
// Rank bodies run in child processes, so they must not use gtest
// assertions: they return 0 on success or print why and return non-zero
// (RANK_CHECK does both). The parent asserts on the LaunchResult.
#include <gtest/gtest.h>

#include <iostream>
#include <sstream>

#include "harness/comm/factory.h"
#include "harness/launch/launcher.h"
#include "harness/launch/rank_env.h"

namespace moe::ranktest {

struct RankRun {
  launch::LaunchResult result;
  std::string out;  // prefixed stdout of all ranks
  std::string err;  // prefixed stderr of all ranks
  std::string all() const { return result.summary + "\n--- stdout\n" + out + "--- stderr\n" + err; }
};

// `tweak` may change further launch options (e.g. the desync watchdog).
inline RankRun runRanks(int n, const std::function<int(const launch::RankContext&)>& body, int timeoutSeconds = 60,
                        const std::function<void(launch::LaunchOptions&)>& tweak = {}) {
  std::ostringstream out, err;
  launch::LaunchOptions o;
  o.nranks = n;
  o.timeout = std::chrono::seconds(timeoutSeconds);
  o.out = &out;
  o.err = &err;
  o.quiet = true;
  if (tweak) tweak(o);
  RankRun r;
  r.result = launch::launchLocal(o, body);
  r.out = out.str();
  r.err = err.str();
  return r;
}

// The world communicator of a rank body (gloo, verification on).
inline std::shared_ptr<comm::Communicator> rankWorld(comm::CommOptions opts = {}) {
  at::set_num_threads(1);
  opts.timeout = std::chrono::seconds(30);
  return launch::initWorld(launch::rankEnvFromEnvironment(), opts);
}

}  // namespace moe::ranktest

// In a rank body: fail the rank with a message when `cond` is false.
#define RANK_CHECK(cond, ...)                                                        \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      std::cerr << "RANK_CHECK failed: " #cond " " << ::moe::str(__VA_ARGS__) << std::endl; \
      return 1;                                                                      \
    }                                                                                \
  } while (0)
