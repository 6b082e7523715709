#pragma once
// A mutant: one named, planted bug of a class that has hit public MoE
// training stacks, the configuration(s) that exercise it and the check that
// must catch it. One file per mutant (harness/mutate/mutants/<name>.cpp)
// with a factory `MutantDef make<Name>Mutant()` and one registration line
// (mutant_registry.cpp says how to add one).
//
// install() writes the mutant's hooks into the mutation-point table
// (mutation_points.h); it runs once per rank process, before any collective.
#include <string>
#include <vector>

#include "common/registry.h"
#include "harness/mutate/mutation.h"
#include "reference/mutants/mutation_points.h"
#include "reference/plan/plan.h"

namespace moe::mutants {

struct MutantDef {
  mutate::MutantSpec spec;  // name, description, injection point, intended check, runs
  void (*install)(MutationPoints& points) = nullptr;
};

// The plug-in interface (common/registry.h): a mutant is its definition.
class Mutant {
 public:
  static constexpr const char* kPluginKind = "mutant";
  virtual ~Mutant() = default;
  virtual const MutantDef& def() const = 0;
  std::string name() const { return def().spec.name; }
};

// A mutant defined by a factory function:
//   MOE_REGISTER(Mutant, FunctionMutant, makeMyMutant);
class FunctionMutant : public Mutant {
 public:
  explicit FunctionMutant(MutantDef (*make)()) : def_(make()) {}
  const MutantDef& def() const override { return def_; }

 private:
  MutantDef def_;
};

// Hook body shared by the mutants that slice a StridedShard tensor as if it
// were plainly sharded (strided_as_plain_shard at load, strided_ignored_on_
// reshard at resume): every StridedShard(d, s) in `placements` becomes Shard(d).
void stridedAsPlainShard(const plan::ParamPlacement& param, std::vector<ref::Placement>& placements);

// A run-plan job on tiny_moe.json in fp32: `plan` names cases/plans/<plan>.json,
// `extra` are further run-plan arguments (e.g. {"--load", "rank0_broadcast"}).
mutate::MutationRunSpec runPlanJob(const std::string& id, int nranks, const std::string& mesh,
                                   const std::string& plan, int steps = 1,
                                   const std::vector<std::string>& extra = {});

}  // namespace moe::mutants
