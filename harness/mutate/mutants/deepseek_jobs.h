#pragma once
// The run-plan job of the deepseek_v3 mutants: runPlanJob's arguments on
// cases/configs/tiny_deepseek_v3.json instead of tiny_moe.json.
#include <string>

#include "harness/mutate/mutant.h"

namespace moe::mutants {

inline mutate::MutationRunSpec deepseekRunPlanJob(const std::string& id, int nranks, const std::string& mesh,
                                                  const std::string& plan, int steps) {
  mutate::MutationRunSpec r = runPlanJob(id, nranks, mesh, plan, steps);
  for (auto& a : r.args)
    if (a == "{cases}/configs/tiny_moe.json") a = "{cases}/configs/tiny_deepseek_v3.json";
  return r;
}

}  // namespace moe::mutants
