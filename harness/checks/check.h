#pragma once
// Checks: the verdicts of a conformance run (placement, expert uniqueness,
// parity, communication). The harness sees parameters by name, placement
// and numbers only, never model internals.
//
// Contract of every check:
//  - collective over the mesh's world when it says so: every rank calls it
//    with its own local data, and every rank returns the SAME verdict (the
//    first failing rank's explanation wins);
//  - returns a CheckResult; it throws only on harness bugs or unusable input;
//  - the explanation names the rank, the parameter and both compared values,
//    e.g. "rank 2: model.layers.1.mlp.experts.down_proj local shape [2, 64, 32]
//    vs expected [4, 64, 32]";
//  - measured maximum differences are reported even when the check passes.
#include <ATen/ATen.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "reference/parallel/shards.h"

namespace moe::checks {

struct CheckResult {
  std::string check;        // the check's registered name: "placement", "parity", ...
  bool passed = false;
  std::string explanation;  // one line on failure; a short summary on success
  nlohmann::json measured;  // e.g. {"loss_max_abs_diff": 1e-7, "tolerance": 1e-5, ...}
};

// The shards a rank holds: declared by the implementation (parallel/shards.h).
using parallel::ParamShard;
// A flat-partitioning wrapper's partitions: declared by the implementation too.
using parallel::FlatPartition;

}  // namespace moe::checks
