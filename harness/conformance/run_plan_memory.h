#pragma once
// run-plan's measured memory per rank (issue 5): on the CPU lane the CPU
// allocation tracker (common/alloc_tracker.h) counts libtorch's tensor
// storage; on the CUDA lane the CUDA caching allocator's counters of the
// rank's GPU do (c10::cuda::CUDACachingAllocator device stats: requested
// bytes, current and peak, so the allocator's block rounding is not
// counted). This probe turns those counters into the inputs of the
// measured_memory check (harness/checks/measured_memory_check.h).
//
// Every number is relative to the live bytes just before loading (the
// baseline: the single-device reference's results, the checkpoint source
// and the communicators are live then and are not the wrapper's), minus the
// storage of the snapshots run-plan keeps for its own checks (the loaded
// shards, step-1 gradients and parameters: `heldBytes`, see snapshotBytes).
// What remains is what the trainer and its data-parallel wrapper hold.
#include <c10/core/Device.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "harness/checks/check.h"
#include "harness/checks/measured_memory_check.h"
#include "common/alloc_tracker.h"
#include "harness/checks/check_context.h"
#include "harness/mesh/device_mesh.h"
#include "reference/parallel/param_store.h"
#include "reference/plan/plan.h"

namespace moe::ref {

class RunMemoryProbe {
 public:
  // Installs the CPU tracker: construct at start-up, before loading.
  RunMemoryProbe();
  // Opens the baseline: call right before loading the rank's parameters.
  // `device`: the run's device lane; its counters are the ones read from
  // here on (CPU: the tracker; CUDA: the caching allocator of that GPU).
  void beforeLoad(c10::Device device = c10::kCPU);
  // Brackets one trainer.step(). heldBytes: storage of run-plan's check
  // snapshots alive at that moment (snapshotBytes).
  void beginStep(int64_t heldBytes);
  void endStep(int64_t heldBytes);
  // The check's inputs for this rank; afterLast is the live bytes at the end
  // of the last step. declared/replicated: checks::MemoryInputs' totals.
  checks::MeasuredMemory measured(int64_t declaredBytes, int64_t replicatedBytes, int64_t allowanceBytes) const;

 private:
  int64_t liveBytes() const;
  int64_t peakBytes() const;
  int64_t resetPeak();  // returns the live bytes

  AllocTracker& tracker_;
  c10::Device device_ = c10::kCPU;
  std::optional<int64_t> baseline_;  // live bytes before loading
  std::optional<int64_t> step_;      // live bytes when the current step began
  std::optional<int64_t> atStep1_;
  std::vector<int64_t> stepPeaks_;
  int64_t afterLast_ = 0;
};

// Bytes of the distinct storages on `device` the shards' tensors hold (a
// storage shared by several shards counts once; storages elsewhere count 0,
// so host copies are not subtracted from a GPU's counters). Counts what the
// tracker counted for them when they were allocated after install (clones:
// numel x element size).
int64_t snapshotBytes(const std::vector<const std::vector<checks::ParamShard>*>& snapshots,
                      c10::Device device = c10::kCPU);

// The CUDA caching allocator's requested bytes of one GPU (cuda_memory.cpp;
// HarnessError in a build without CUDA).
struct CudaMemoryStats {
  int64_t current = 0;
  int64_t peak = 0;
};
CudaMemoryStats cudaMemoryStats(int device);
void cudaResetPeakMemory(int device);

// Into how many pieces the data-parallel wrapper splits a plan-local tensor:
// the product of the sizes of the mesh dims the shard's placements shard and
// the plan's do not (1: the wrapper keeps it as the plan placed it).
// sizes: meshSizes(mesh).
int64_t wrapperSplit(const checks::ParamShard& shard, const plan::ParamPlacement& pp, const std::vector<int>& sizes);

// The bytes a rank may hold after a step beyond its wrapper's declaration
// (see the derivation in run_plan_memory.cpp): the padding of gradient
// blocks of the parameters the wrapper shards on dim 0 beyond the plan.
// shards: the wrapper's parameters as paramShards() reports them (their
// placements include the wrapper's split); plan: the plan placements.
int64_t memoryAllowance(const std::vector<checks::ParamShard>& shards, const plan::AppliedPlan& plan,
                        const mesh::DeviceMesh& mesh);

// The memory check's inputs on this rank: what the wrapper declares it holds
// (`memory`: ParamStore::memory(); `optimizerBytes`: the AdamW state), what
// the replicated layout would hold (from the plan), and the fp32 bytes the
// reported placements describe (`shards`, after the last step). A wrapper
// that keeps flat partitions (`flatPartitions` non-empty; only their members
// and dims are read) is expected to hold ceil(N/n) elements of each flat
// group's N, with N from the placements, not from the store.
checks::MemoryInputs memoryInputs(const parallel::StoreMemory& memory, int64_t optimizerBytes,
                                  const plan::AppliedPlan& plan, const mesh::DeviceMesh& mesh,
                                  const std::vector<checks::ParamShard>& shards,
                                  const std::vector<checks::FlatPartition>& flatPartitions);
// The "memory" view of a run result: declared bytes and the ratio to the
// replicated layout.
nlohmann::json memoryJson(const checks::MemoryInputs& m);

// Moves the judges' snapshot copies (what the checks compare after the run:
// the loaded parameters, step 1's gradients and parameters) out of the
// process's memory when they hold at least minBytes: their bytes go to an
// unlinked file under `dir` and each tensor becomes a private read-write
// mapping of it (file-backed pages the kernel can drop and read back; a write
// copies the page). At realistic width they are three copies of the rank's
// parameters: as much memory as the parameters, gradients and half the AdamW
// state, and more than a 2-core, 24 GB machine holds for 4 ranks. Shapes,
// dtypes and values are unchanged; snapshotBytes() no longer counts them.
void spillToDisk(std::vector<checks::ParamShard>& shards, const std::string& dir, int64_t minBytes);

}  // namespace moe::ref
