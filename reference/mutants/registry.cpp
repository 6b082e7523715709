// How to add a mutant:
//  1. Write reference/mutants/<name>.cpp defining `Mutant make<Name>Mutant()`
//     (mutant.h): its spec (name, one-sentence description of the bug, the
//     injection point as "file: function", the check that must kill it:
//     placement | expert_uniqueness | parity | communication | desync, and
//     the run-plan jobs that exercise it, built with runPlanJob()) and an
//     install() that sets the hook(s) it needs in MutationPoints. If no
//     existing mutation point fits, add a null function pointer to
//     mutation_points.h and one `if (auto f = mutants::points().x) ...` at
//     the site in the correct code.
//  2. Add one X(make<Name>Mutant) line to MOE_MUTANTS below and <name> to
//     MOE_MUTANTS in reference/mutants/CMakeLists.txt (which compiles
//     <name>.cpp and registers the ctest `mutation.<name>`).
//  3. Run `moe-harness mutate --mutants <name>`: it must report "killed" by
//     the intended check, and the unmutated configuration must stay green.
#include "harness/common/error.h"
#include "reference/mutants/mutant_registry.h"

#define MOE_MUTANTS(X)                         \
  X(makeEpRank0BroadcastOverwriteMutant)       \
  X(makeStyleDegradesToReplicateMutant)        \
  X(makeStridedAsPlainShardMutant)             \
  X(makeExpertGradWrongScaleMutant)            \
  X(makeAuxLossLocalScopeMutant)               \
  X(makeClipNormDoubleCountMutant)             \
  X(makeA2aSplitOffByOneMutant)                \
  X(makeSpNormGradNotReducedMutant)            \
  X(makeTpPartialNotReducedMutant)             \
  X(makeRouterUnsyncedMutant)                  \
  X(makeEpZero3MismatchedInitMutant)           \
  X(makeFsdpExpertsOnDpGroupMutant)

namespace moe::mutants {

#define MOE_DECLARE_MUTANT(f) Mutant f();
MOE_MUTANTS(MOE_DECLARE_MUTANT)
#undef MOE_DECLARE_MUTANT

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

const std::vector<Mutant>& allMutants() {
  static const std::vector<Mutant> mutants = [] {
    std::vector<Mutant> v;
#define MOE_ADD_MUTANT(f) v.push_back(f());
    MOE_MUTANTS(MOE_ADD_MUTANT)
#undef MOE_ADD_MUTANT
    for (size_t i = 0; i < v.size(); ++i)
      for (size_t j = 0; j < i; ++j)
        MOE_ASSERT(v[i].spec.name != v[j].spec.name, "mutant ", v[i].spec.name, " is registered twice");
    return v;
  }();
  return mutants;
}

std::vector<std::string> mutantNames() {
  std::vector<std::string> out;
  for (const auto& m : allMutants()) out.push_back(m.spec.name);
  return out;
}

const Mutant& findMutant(const std::string& name) {
  for (const auto& m : allMutants())
    if (m.spec.name == name) return m;
  std::string known;
  for (const auto& n : mutantNames()) known += (known.empty() ? "" : ", ") + n;
  fail("unknown mutant '", name, "' (known: ", known, ")");
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
  const Mutant& m = findMutant(name);
  if (!activeName().empty())
    fail("mutant '", name, "': mutant '", activeName(), "' is already active (one per process)");
  MOE_ASSERT(m.install != nullptr, "mutant ", name, " has no install()");
  m.install(detail::gPoints);
  activeName() = name;
}

const std::string& activeMutant() { return activeName(); }

}  // namespace moe::mutants
