#pragma once
// `moe-harness run-plan`: one plan on one mesh, inside a launched job.
//
// Every rank: loads its shards of the initial weights straight from a
// checkpoint (the deterministic init of --seed, or --checkpoint), trains
// --steps steps with the distributed model, and runs the checks against the
// single-device reference of the same config, dtype and seed (computed on
// every rank: an independent code path, cheap for the small models this is
// meant for):
//  - placement and expert uniqueness on the loaded shards,
//  - parity of per-step loss/ce/aux/grad norm, step-1 gradients and the
//    final parameters,
//  - communication: the token dispatch volume equals tokens x top-k per MoE
//    layer, and the per-step collective counters are reported.
// Rank 0 prints one JSON document (per-step values, every check with its
// measured maxima); all ranks agree on the verdict and exit 1 if any check
// failed.
#include <CLI/CLI.hpp>

namespace moe::ref {

void addRunPlanCommand(CLI::App& app);

}  // namespace moe::ref
