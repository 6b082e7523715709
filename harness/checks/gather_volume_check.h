#pragma once
// The fsdp_gather_volume check: the all-gather volume of a wrapper that
// shards parameters beyond the plan and gathers each one whole once per step
// (ParamStore::parameterGatherPrefix() non-empty: FSDP with
// reshard_after_forward=False), computed from the plan and the reported
// placements alone, independently of the store's own expectation.
//
// Every such parameter is gathered once per step in `elementBytes`-byte
// elements (the compute dtype when it is narrower than fp32: bf16
// parameters; README "Gather dtype"), and a rank sends (n-1)/n of the
// gathered bytes, n = its gather group (the mesh dims its storage shards and
// its plan placement does not). Uneven pieces are padded to the group's
// largest piece (its members' pieces by the reported placements) for an even
// collective, so the measured/unpadded ratio is exactly 1 when every gathered
// dim 0 splits evenly and above 1 otherwise; the measured bytes must equal
// the padded volume exactly either way (wrapper_checks.h: GatherVolume).
#include <string>
#include <vector>

#include "harness/checks/wrapper_checks.h"

namespace moe::checks {

// Pure: what this rank gathers: one entry per shard (its plan-local tensor
// and its group's pieces). sizes/coords: the mesh's sizes and this rank's
// coordinates.
std::vector<GatheredParam> gatheredParams(const plan::AppliedPlan& plan, const std::vector<ParamShard>& shards,
                                          const std::vector<int>& sizes, const std::vector<int>& coords);
// Pure: the all_gather bytes sent on groups named "<prefix>...".
double gatherBytesSent(const CommCounters& counters, const std::string& prefix);
// Collective over `world`: every rank's measured bytes against its expected
// volume; one verdict (check "fsdp_gather_volume") with the ratios' range.
CheckResult checkGatherVolume(comm::Communicator& world, double measured, const GatherVolume& volume,
                              int64_t elementBytes);

}  // namespace moe::checks
