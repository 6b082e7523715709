#pragma once
// The case-file subcommands of moe-harness (registered in harness/cli/main.cpp):
//   run [CASES|DIR ...] [--filter RE] [--id ID] [--label L] [--exclude-label L]
//       [--backend gloo|nccl] [--report DIR] [--jobs N] [--reference-cache DIR]
//     exit 0 when every run passed, 1 when any failed or errored, 77 when
//     every selected run was skipped (e.g. nccl without GPUs).
//   list [CASES ...] [selection] [--ctest FILE --harness BIN --reference-cache DIR]
//   validate CASES...   schema + semantic checks, exit 1 if any is invalid
//   describe CASE...    expanded runs, mesh coordinates, per-rank placements
#include <CLI/CLI.hpp>

namespace moe::cases {

void addRunCommand(CLI::App& app);
void addListCommand(CLI::App& app);
void addValidateCommand(CLI::App& app);
void addDescribeCommand(CLI::App& app);

}  // namespace moe::cases
