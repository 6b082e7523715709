// interleaved_as_stacked: GPT-OSS's experts.gate_up_proj [E, H, 2I] (and its
// bias [E, 2I]) interleave gate and up on the last dim, so MoE tensor
// parallelism shards them with plain Shard(-1) (whole pairs per rank). The
// mutant loads them as if they were stacked (gate block, then up block):
// StridedShard(-1, 2), the layout moe_tp_gate_up_colwise gives Qwen's
// [E, 2I, H]. Rank r then holds columns of both halves that are not its
// (gate, up) pairs. Killed by placement: the local values are not the
// declared Shard(-1) slice of the checkpoint.
#include "harness/mutate/mutant.h"
#include "reference/plan/plan.h"

namespace moe::mutants {
namespace {

void stacked(const plan::ParamPlacement& param, std::vector<ref::Placement>& placements) {
  if (!param.name.ends_with("mlp.experts.gate_up_proj") && !param.name.ends_with("mlp.experts.gate_up_proj_bias"))
    return;
  for (auto& p : placements)
    if (p.kind == ref::PlacementKind::kShard && (p.dim == -1 || p.dim == static_cast<int64_t>(param.globalShape.size()) - 1))
      p = ref::Placement::stridedShard(p.dim, 2);
}

}  // namespace

MutantDef makeInterleavedAsStackedMutant() {
  MutantDef m;
  m.spec.name = "interleaved_as_stacked";
  m.spec.description =
      "gpt_oss: the interleaved gate_up_proj [E, H, 2I] is loaded as if stacked (StridedShard(-1, 2) instead of Shard(-1))";
  m.spec.injectionPoint = "reference/parallel/loading.cpp, every path (loaderPlacements)";
  m.spec.intendedCheck = "placement";
  mutate::MutationRunSpec r;
  r.id = "gpt_oss_tp2.moe_tp";
  r.nranks = 2;
  r.args = {"--config", "{cases}/configs/tiny_gpt_oss.json", "--mesh", R"({"tp":2})", "--plan",
            "{cases}/plans/gpt_oss_moe_tp.json", "--dtype", "fp32", "--steps", "1"};
  m.spec.runs = {r};
  m.install = [](MutationPoints& p) { p.loaderPlacements = stacked; };
  return m;
}

MOE_REGISTER(Mutant, FunctionMutant, makeInterleavedAsStackedMutant);

}  // namespace moe::mutants
