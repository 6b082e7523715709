#pragma once
// The registry of mutants (see registry.cpp for how to add one) and the
// run-time switch: `run-plan --mutant NAME` calls activateMutant(NAME) in
// every rank before anything else happens. Without it every mutation point
// stays null, i.e. the correct code runs.
#include <string>
#include <vector>

#include "harness/mutate/mutant.h"

namespace moe::mutants {

// Every registered mutant, sorted by name.
const std::vector<MutantDef>& allMutants();
std::vector<std::string> mutantNames();
// Throws HarnessError "unknown mutant 'x' (known: a, b, ...)".
const MutantDef& findMutant(const std::string& name);
// The harness-side description of every mutant (for `moe-harness mutate`).
std::vector<mutate::MutantSpec> mutantSpecs();

// Installs the named mutant's hooks (validates the name first). At most one
// mutant per process: a second activation is an error.
void activateMutant(const std::string& name);
// "" while no mutant is active (the default).
const std::string& activeMutant();

}  // namespace moe::mutants
