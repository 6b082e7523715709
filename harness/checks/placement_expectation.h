#pragma once
// What a case expects of some parameters' placements and local shapes
// (cases/*.json "expect.placements"), judged by the expected_placements
// check (expected_placements_check.h). Plain data, so the case loader and
// run-plan's options can carry it without the checks' dependencies.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace moe::checks {

struct PlacementExpectation {
  std::string param;
  std::vector<int> ranks;                   // empty: every rank
  std::optional<std::string> placements;    // "[Shard(0), Replicate()]" (placement.h text form)
  std::optional<std::vector<int64_t>> localShape;
};

// [{"param": p, "ranks": [..], "placements": "[Shard(0)]", "local_shape": [..]}]
// (absent fields omitted): the form run-plan's --expect-placements reads.
nlohmann::json placementExpectationsToJson(const std::vector<PlacementExpectation>& expectations);
// HarnessError naming the entry when a field is missing or mistyped.
std::vector<PlacementExpectation> placementExpectationsFromJson(const nlohmann::json& j);

}  // namespace moe::checks
