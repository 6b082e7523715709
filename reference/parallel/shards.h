#pragma once
// What the implementation under test declares about itself, for its judges
// (harness/checks) to verify: the shards a rank holds, the flat partitions a
// flat-partitioning wrapper (zero3) holds, and the collectives a step is
// expected to issue. These types live here, with the code that produces
// them, so reference/ never includes the checks.
#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <vector>

#include "harness/comm/types.h"
#include "reference/placement/placement.h"

namespace moe::parallel {

// One parameter as a rank holds it after a plan was applied.
struct ParamShard {
  std::string name;                       // Hugging Face name
  at::Tensor local;                       // this rank's local tensor (any shape)
  std::vector<ref::Placement> placements; // one per mesh dim, in mesh-dim order
  std::vector<int64_t> globalShape;
  std::string style;                      // plan style that placed it ("" = none: must be replicated)
  // The style (or wrapper) that placed it declares that it shards it
  // (PlanStyle::shardsParameters): the placement check fails a parameter
  // that then ends up whole, and requires every other one to be replicated.
  bool shardedByStyle = false;
  bool isExpert = false;                  // fused expert tensor ([E, ...] on dim 0)
  // isExpert only: the global expert index of each local row of dim 0 as the
  // model routes tokens to them. Empty = derived from the placements; when
  // set, the expert check also verifies it against the placements.
  std::vector<int64_t> expertIds;
};

// One flat group as a flat-partitioning wrapper (zero3) holds it.
struct FlatPartition {
  std::string group;                // label for messages, e.g. "model.layers.1 [dp]"
  std::vector<std::string> params;  // member parameter names, in flat order
  std::vector<std::string> dims;    // mesh dims the wrapper partitions it over
  at::Tensor local;                 // [P] this rank's partition (any floating dtype)
};

// The collectives one (group, op) should run in a measured window (one step).
struct CommExpectation {
  std::string group;  // communicator name: "world", "tp", "ep", "edp+ep", ...
  comm::OpType op = comm::OpType::kAllReduce;
  int64_t calls = 0;
  std::optional<int64_t> bytesSent;  // logical bytes (see flight_recorder.h)
  std::optional<int64_t> bytesRecv;
};

}  // namespace moe::parallel
