#pragma once
#include <CLI/CLI.hpp>

namespace moe::mutants {
// Registers `moe-harness mutate` (see mutate_command.cpp).
void addMutateCommand(CLI::App& app);
}  // namespace moe::mutants
