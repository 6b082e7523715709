// How to add a mutant:
//  1. Write harness/mutate/mutants/<name>.cpp defining
//     `MutantDef make<Name>Mutant()` (mutant.h): its spec (name,
//     one-sentence description of the bug, the injection point as
//     "file: function", the check that must kill it: placement |
//     expert_uniqueness | parity | communication | desync, and the run-plan
//     jobs that exercise it, built with runPlanJob()) and an install() that
//     sets the hook(s) it needs in MutationPoints. If no existing mutation
//     point fits, add a null function pointer to
//     reference/mutants/mutation_points.h and one
//     `if (auto f = mutants::points().x) ...` at the site in the correct code.
//  2. End the file with its registration line:
//       MOE_REGISTER(Mutant, FunctionMutant, make<Name>Mutant);
//     The folder is globbed and the ctest `mutation.<name>` comes from the
//     registry (`moe-harness mutate --ctest`): nothing else to touch.
//  3. Run `moe-harness mutate --mutants <name>`: it must report "killed" by
//     the intended check, and the unmutated configuration must stay green.
#include "common/error.h"
#include "harness/mutate/mutant_registry.h"

namespace moe::mutants {


void stridedAsPlainShard(const plan::ParamPlacement&, std::vector<ref::Placement>& placements) {
  for (auto& p : placements)
    if (p.kind == ref::PlacementKind::kStridedShard) p = ref::Placement::shard(p.dim);
}

mutate::MutationRunSpec runPlanJob(const std::string& id, int nranks, const std::string& mesh,
                                   const std::string& plan, int steps, const std::vector<std::string>& extra) {
  mutate::MutationRunSpec r;
  r.id = id;
  r.nranks = nranks;
  r.args = {"--config", "{cases}/configs/tiny_moe.json", "--mesh", mesh, "--plan", "{cases}/plans/" + plan + ".json",
            "--dtype", "fp32", "--steps", std::to_string(steps)};
  r.args.insert(r.args.end(), extra.begin(), extra.end());
  return r;
}

const std::vector<MutantDef>& allMutants() {
  static const std::vector<MutantDef> mutants = [] {
    std::vector<MutantDef> v;
    for (const Mutant* m : Registry<Mutant>::instance().all()) v.push_back(m->def());
    return v;
  }();
  return mutants;
}

std::vector<std::string> mutantNames() {
  std::vector<std::string> out;
  for (const auto& m : allMutants()) out.push_back(m.spec.name);
  return out;
}

const MutantDef& findMutant(const std::string& name) {
  return Registry<Mutant>::instance().get(name).def();
}

std::vector<mutate::MutantSpec> mutantSpecs() {
  std::vector<mutate::MutantSpec> out;
  for (const auto& m : allMutants()) out.push_back(m.spec);
  return out;
}

namespace {
std::string& activeName() {
  static std::string name;
  return name;
}
}  // namespace

void activateMutant(const std::string& name) {
  const MutantDef& m = findMutant(name);
  if (!activeName().empty())
    fail("mutant '", name, "': mutant '", activeName(), "' is already active (one per process)");
  MOE_ASSERT(m.install != nullptr, "mutant ", name, " has no install()");
  m.install(detail::gPoints);
  activeName() = name;
}

const std::string& activeMutant() { return activeName(); }

}  // namespace moe::mutants
