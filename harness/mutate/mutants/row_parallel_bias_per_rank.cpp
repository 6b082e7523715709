// row_parallel_bias_per_rank: GPT-OSS's experts.down_proj is row-parallel
// under MoE tensor parallelism (each tp rank holds I / tp of its rows, so
// its output is a Partial(sum)); its bias down_proj_bias must be added once,
// after the reduction. The mutant adds it on every tp rank before the
// all-reduce, so the sum carries tp copies of it. Killed by parity: the
// loss and gradients move away from the single-device run (nothing else
// changes: the same collectives, the same placements). The same hook plants
// the same bug in attention's row-parallel o_proj.bias under
// gpt_oss_attn_colwise / gpt_oss_attn_rowwise (run gpt_oss_tp2.attn_tp,
// attention alone on tp).
#include "harness/mutate/mutant.h"

namespace moe::mutants {

MutantDef makeRowParallelBiasPerRankMutant() {
  MutantDef m;
  m.spec.name = "row_parallel_bias_per_rank";
  m.spec.description = "gpt_oss: the row-parallel down_proj_bias / o_proj.bias is added on every tp rank (before the reduction)";
  m.spec.injectionPoint = "reference/parallel/dist_model.cpp: gptOssMoeLayer, gptOssEpTpExperts, gptOssAttentionLayer (rowParallelBiasPerRank)";
  m.spec.intendedCheck = "parity";
  mutate::MutationRunSpec r;
  r.id = "gpt_oss_tp2.moe_tp";
  r.nranks = 2;
  r.args = {"--config", "{cases}/configs/tiny_gpt_oss.json", "--mesh", R"({"tp":2})", "--plan",
            "{cases}/plans/gpt_oss_moe_tp.json", "--dtype", "fp32", "--steps", "1"};
  mutate::MutationRunSpec a = r;
  a.id = "gpt_oss_tp2.attn_tp";
  a.args = {"--config", "{cases}/configs/tiny_gpt_oss.json", "--mesh", R"({"tp":2})", "--plan",
            "{cases}/plans/gpt_oss_attn_tp.json", "--dtype", "fp32", "--steps", "1"};
  m.spec.runs = {r, a};
  m.install = [](MutationPoints& p) { p.rowParallelBiasPerRank = [] { return true; }; };
  return m;
}

MOE_REGISTER(Mutant, FunctionMutant, makeRowParallelBiasPerRankMutant);

}  // namespace moe::mutants
