#pragma once
// The collectives one DistTrainer step issues on this rank, per (group, op),
// as the plan implies them (see DistTrainer::expectedStepComm for the list).
#include <vector>

#include "harness/comm/communicator.h"
#include "harness/mesh/device_mesh.h"
#include "reference/model/config.h"
#include "reference/parallel/layer_plan.h"
#include "reference/parallel/param_store.h"
#include "reference/parallel/shards.h"
#include "reference/train/trainer.h"

namespace moe::parallel {

struct DispatchStats;

// Everything the derivation reads; references to the trainer's own state.
struct StepCommInputs {
  const ref::ModelConfig& config;
  const ref::TrainOptions& options;
  const mesh::DeviceMesh& mesh;
  const std::vector<LayerPlan>& layers;
  bool sp;
  const comm::Communicator& tp;     // the tensor-parallel group
  const comm::Communicator& ep;     // the expert-parallel group
  const comm::Communicator& stats;  // the loss statistics' group
  const ParamStore& store;          // the data-parallel wrapper
  const DispatchStats& dispatch;    // the step's routing (EP byte counts)
};

// Call it after the step it describes (EP byte counts use that step's routing).
std::vector<CommExpectation> expectedStepComm(const StepCommInputs& in);

}  // namespace moe::parallel
