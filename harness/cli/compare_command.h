#pragma once
#include <CLI/CLI.hpp>

namespace moe::reports {
// Registers `compare` (see compare.h for what is flagged).
void addCompareCommand(CLI::App& app);
}  // namespace moe::reports
