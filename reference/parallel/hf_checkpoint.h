#pragma once
// The consolidated Hugging Face layout of a training checkpoint (issue 19):
// what `run-plan --save DIR --save-format hf` leaves in DIR, loadable by
// `moe-harness reference --checkpoint DIR`, by Hugging Face's
// `from_pretrained(DIR)` and by `run-plan --resume DIR` on any mesh.
//
//   DIR/config.json              the model's config in its family's Hugging
//                                Face field names (ModelConfig::toJson),
//                                without the harness's experts_implementation
//                                (transformers 5 reads that name as its own
//                                kernel choice and refuses "grouped"/"loop")
//   DIR/model.safetensors, or    every parameter in the family's hub naming
//   DIR/model-0000i-of-0000n.    (per-expert keys: "...experts.<e>.gate_proj
//     safetensors + model.       .weight"; gpt_oss's fused hub tensors), fp32,
//     safetensors.index.json     split at maxShardBytes as save_pretrained does
//   DIR/optimizer.safetensors    AdamW's moments, "optimizer.exp_avg/<name>"
//                                and "optimizer.exp_avg_sq/<name>" under the
//                                in-memory (fused) parameter names, fp32
//   DIR/trainer_state.json       {"format": "moe-harness-hf-v1", "info":
//                                {the run's step, data position, AdamW
//                                state, config, seed, source mesh/plan, ...
//                                as the sharded layout's metadata.json},
//                                "hashes": {name: FNV-1a 64 of the fused fp32
//                                tensor's bytes, parameters and moments}}
// from_pretrained reads config.json and the model files and ignores the rest
// (as it ignores a Trainer checkpoint's optimizer.pt and trainer_state.json).
//
// Atomicity: the directory is built as DIR.tmp and renamed to DIR when every
// file is in it, so a reader never sees half of one; trainer_state.json is
// written last inside it.
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "reference/io/expert_layout.h"
#include "reference/io/tensor_source.h"
#include "reference/model/config.h"

namespace moe::parallel {

constexpr const char* kHfFormat = "moe-harness-hf-v1";
constexpr const char* kHfTrainerStateFile = "trainer_state.json";
constexpr const char* kHfOptimizerFile = "optimizer.safetensors";

struct HfWriteOptions {
  std::string dir;                             // the checkpoint directory (must not exist)
  uint64_t maxShardBytes = 5ull << 30;         // Hugging Face's default "5GB"
  nlohmann::json info;                         // trainer_state.json "info"
};

// Writes the consolidated layout from `fused`: a source holding every
// parameter of `config` under its in-memory (fused) name and both AdamW
// moments under the optimizer prefixes (e.g. a DistCheckpointSource, whose
// reads refuse a range not covered exactly once). `paramNames`: the
// parameters, in the order to store them. One process writes; each tensor
// is read once. Throws HarnessError naming the directory and the tensor.
void writeHfCheckpoint(const io::TensorSource& fused, const ref::ModelConfig& config,
                       const std::vector<std::string>& paramNames, const HfWriteOptions& options);

// True when `dir` holds trainer_state.json (the consolidated layout).
bool isHfCheckpoint(const std::string& dir);

// A consolidated checkpoint as one TensorSource: parameters under their
// fused names (read through io::FusedExpertView, so a slice of an expert
// tensor reads only the selected experts' keys) and the moments under the
// optimizer prefixes. The constructor parses trainer_state.json and opens
// the files; errors name the directory and what is wrong (a missing file,
// a malformed trainer_state.json, a format other than kHfFormat, missing or
// extra experts).
class HfCheckpointSource : public io::TensorSource {
 public:
  HfCheckpointSource(const std::string& dir, const io::FusedViewOptions& view);
  ~HfCheckpointSource() override;

  using io::TensorSource::readSlice;
  std::string where() const override { return dir_; }
  std::string whereOf(const std::string& name) const override;
  std::vector<std::string> names() const override;
  bool has(const std::string& name) const override;
  std::vector<int64_t> shape(const std::string& name) const override;
  at::ScalarType scalarType(const std::string& name) const override;
  at::Tensor readSlice(const std::string& name, const std::vector<io::SliceRange>& ranges) const override;

  const nlohmann::json& info() const { return info_; }
  const nlohmann::json& hashes() const { return hashes_; }
  // Reads every tensor whole and compares its hash with trainer_state.json:
  // "" or the first problem ("tensor 'X': content hash A, trainer_state.json
  // says B"; a tensor without a recorded hash, a recorded tensor missing).
  std::string verifyAllHashes() const;

 private:
  const io::TensorSource& sourceOf(const std::string& name) const;

  std::string dir_;
  nlohmann::json info_, hashes_;
  std::unique_ptr<io::TensorSource> modelFiles_;
  std::unique_ptr<io::FusedExpertView> model_;
  std::unique_ptr<io::TensorSource> optimizer_;
};

// A checkpoint to resume from, in either layout: the sharded one
// (metadata.json, io::DistCheckpointSource) or the consolidated one
// (trainer_state.json, HfCheckpointSource). `info`: the run's step, data
// position, config, ... as saved. Throws HarnessError naming the directory
// when it is neither (or either one's own errors: an incomplete sharded
// save names its missing rank files).
struct ResumeCheckpoint {
  std::unique_ptr<io::TensorSource> source;
  nlohmann::json info;
  std::string layout;  // "sharded" | "hf"
};
ResumeCheckpoint openResumeCheckpoint(const std::string& dir, const io::FusedViewOptions& view);

}  // namespace moe::parallel
