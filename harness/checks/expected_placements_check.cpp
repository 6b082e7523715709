#include "harness/checks/expected_placements_check.h"

#include <algorithm>

#include "common/error.h"
#include "common/registry.h"
#include "harness/checks/check_common.h"

namespace moe::checks {

nlohmann::json placementExpectationsToJson(const std::vector<PlacementExpectation>& expectations) {
  nlohmann::json j = nlohmann::json::array();
  for (const auto& e : expectations) {
    nlohmann::json x = {{"param", e.param}};
    if (!e.ranks.empty()) x["ranks"] = e.ranks;
    if (e.placements) x["placements"] = *e.placements;
    if (e.localShape) x["local_shape"] = *e.localShape;
    j.push_back(x);
  }
  return j;
}

std::vector<PlacementExpectation> placementExpectationsFromJson(const nlohmann::json& j) {
  if (!j.is_array()) fail("expected placements: need a JSON array, got ", j.dump());
  std::vector<PlacementExpectation> out;
  for (size_t i = 0; i < j.size(); ++i) {
    try {
      PlacementExpectation e;
      e.param = j[i].at("param").get<std::string>();
      e.ranks = j[i].value("ranks", std::vector<int>{});
      if (j[i].contains("placements")) e.placements = j[i]["placements"].get<std::string>();
      if (j[i].contains("local_shape")) e.localShape = j[i]["local_shape"].get<std::vector<int64_t>>();
      out.push_back(e);
    } catch (const nlohmann::json::exception& ex) {
      fail("expected placements: entry ", i, " (", j[i].dump(), "): ", ex.what());
    }
  }
  return out;
}

std::vector<std::string> expectedPlacementFailures(int rank, const std::vector<ParamShard>& shards,
                                                   const std::vector<PlacementExpectation>& expectations) {
  std::vector<std::string> out;
  for (const auto& e : expectations) {
    out.emplace_back();
    if (!e.ranks.empty() && std::find(e.ranks.begin(), e.ranks.end(), rank) == e.ranks.end()) continue;
    auto s = std::find_if(shards.begin(), shards.end(), [&](const ParamShard& p) { return p.name == e.param; });
    if (s == shards.end()) {
      out.back() = moe::str("rank ", rank, ": ", e.param, " is not among the rank's parameters");
      continue;
    }
    if (e.placements) {
      const auto ndim = static_cast<int64_t>(s->globalShape.size());
      auto norm = [&](std::vector<ref::Placement> ps) {
        for (auto& p : ps) p = p.normalized(ndim);
        return ps;
      };
      if (norm(s->placements) != norm(ref::parsePlacements(*e.placements))) {
        out.back() = moe::str("rank ", rank, ": ", e.param, " placements ", ref::toString(s->placements),
                              " vs expected ", *e.placements);
        continue;
      }
    }
    const std::vector<int64_t> shape = s->local.sizes().vec();
    if (e.localShape && shape != *e.localShape)
      out.back() = moe::str("rank ", rank, ": ", e.param, " local shape ", nlohmann::json(shape).dump(),
                            " vs expected ", nlohmann::json(*e.localShape).dump());
  }
  return out;
}

CheckResult describeExpectedPlacements(const std::vector<PlacementExpectation>& expectations,
                                       const std::vector<std::vector<std::string>>& failuresPerRank) {
  CheckResult c;
  c.check = "expected_placements";
  c.passed = true;
  const int worldSize = static_cast<int>(failuresPerRank.size());
  int compared = 0;
  for (size_t i = 0; i < expectations.size(); ++i) {
    std::vector<int> ranks = expectations[i].ranks;
    if (ranks.empty())
      for (int r = 0; r < worldSize; ++r) ranks.push_back(r);
    for (int rank : ranks) {
      if (rank < 0 || rank >= worldSize) continue;  // the case validator rejects these
      const std::string& failure = failuresPerRank[rank].at(i);
      if (!failure.empty()) {
        c.passed = false;
        c.explanation = failure;
        return c;  // measured stays null, as the first failure ends the comparison
      }
      ++compared;
    }
  }
  c.explanation = moe::str(compared, " (parameter, rank) placements and local shapes as the case expects");
  c.measured = {{"compared", compared}};
  return c;
}

namespace {

class ExpectedPlacementsCheck : public Check {
 public:
  ExpectedPlacementsCheck()
      : Check({"expected_placements",
               "the parameters the case names have the placements and local shapes it expects on the ranks it names",
               CheckStage::kAfterLoad, 120, "mesh, params, expectedPlacements",
               "exact: the case's expect.placements"}) {}
  // Reported last, where the suite used to append it.
  bool applies(const CheckContext& ctx) const override {
    return ctx.expectedPlacements != nullptr && !ctx.expectedPlacements->empty();
  }
  CheckResult run(const CheckContext& ctx) const override {
    const char* kName = "expected_placements";
    mesh::DeviceMesh& mesh = require(ctx.mesh, kName, "mesh");
    const auto& expectations = require(ctx.expectedPlacements, kName, "expected placements");
    comm::Communicator& world = *mesh.world();
    const int rank = world.globalRanks()[world.rank()];
    const auto mine = expectedPlacementFailures(rank, require(ctx.params, kName, "params"), expectations);
    std::vector<std::vector<std::string>> all;
    for (const auto& s : allGatherStrings(world, nlohmann::json(mine).dump()))
      all.push_back(nlohmann::json::parse(s).get<std::vector<std::string>>());
    return describeExpectedPlacements(expectations, all);
  }
};

}  // namespace

MOE_REGISTER(Check, ExpectedPlacementsCheck);

}  // namespace moe::checks
