#pragma once
// Distributed checkpoints of a DistTrainer (issue 19): save what each rank
// owns, resume onto any mesh, plan and wrapper.
//
// What is saved (io/dist_checkpoint.h is the file layout): every plan
// parameter under its Hugging Face name, AdamW's first and second moments
// under "optimizer.exp_avg/<name>" and "optimizer.exp_avg_sq/<name>", all
// fp32, plus the `info` the caller gives (run-plan: step, data position,
// AdamW step count and options, config, source mesh, plan, wrapper, world
// size, dtype).
//
// Owner rule: a rank writes the boxes of its local tensor (one per
// combination of its layout's ranges, so a StridedShard piece is several
// boxes at their global offsets) only when, on every mesh dim d its
// placements do not shard, its coordinate is (fnv1a64(saved name) + d) mod
// the dim's size: of the ranks holding the same elements exactly one writes
// them, so every global element is written once, and replicated tensors
// are spread over the ranks holding them by name. Experts are written at
// their global expert index (the box offset).
//
// Resume reads through DistCheckpointSource with the RESUMING run's plan:
// parameters and moments alike, each rank only the slices its own
// placements give (loadLocalParams' path), so any source layout reshards to
// any target layout.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "harness/mesh/device_mesh.h"
#include "reference/io/dist_checkpoint.h"
#include "reference/model/params.h"
#include "reference/parallel/shards.h"
#include "reference/plan/plan.h"

namespace moe::parallel {

constexpr const char* kExpAvgPrefix = "optimizer.exp_avg/";
constexpr const char* kExpAvgSqPrefix = "optimizer.exp_avg_sq/";

// The pieces this rank writes of `shard` (empty unless it is the owner, see
// above), named `savedName`. shard.local: [local shape of its placements].
std::vector<io::CheckpointPiece> ownedPieces(const ParamShard& shard, const std::string& savedName,
                                             const mesh::DeviceMesh& mesh);

struct DistSaveOptions {
  std::string dir;
  int64_t step = 0;      // steps taken when saved
  nlohmann::json info;   // recorded in metadata.json "info"
};

// Collective over mesh.world(): rank 0 writes INTENT, every rank its
// pieces of `params`, `expAvg`, `expAvgSq` (ParamShard views, e.g.
// DistTrainer::paramShards / optimizerShards), then rank 0 metadata.json and
// COMPLETE. A failure on rank 0's side (a missing rank file) reaches every
// rank as a HarnessError (the ranks agree through one all_reduce).
void saveDistCheckpoint(const DistSaveOptions& options, mesh::DeviceMesh& mesh, const std::vector<ParamShard>& params,
                        const std::vector<ParamShard>& expAvg, const std::vector<ParamShard>& expAvgSq);

// What a resume needs, as this rank's plan-local fp32 tensors.
struct ResumeState {
  int64_t step = 0;
  ref::ParamMap params, expAvg, expAvgSq;
};

// Reads the parameters and both moments of `plan.params` from `source` (a
// checkpoint in either layout: DistCheckpointSource, HfCheckpointSource)
// with this rank's placements (no communication). A tensor missing or shaped
// differently from the plan's global shape is a HarnessError naming the
// checkpoint, the tensor and both shapes. `step`: info["step"] (the
// checkpoint's metadata.json / trainer_state.json "info").
ResumeState loadResumeState(const io::TensorSource& source, const nlohmann::json& info, const plan::AppliedPlan& plan,
                            mesh::DeviceMesh& mesh);

// "" when `checkpointConfig` (metadata "info.config") equals `runConfig`,
// else "config field 'num_experts' is 4 in the checkpoint, 8 in this run"
// (every differing field, in key order).
std::string configMismatch(const nlohmann::json& checkpointConfig, const nlohmann::json& runConfig);

}  // namespace moe::parallel
