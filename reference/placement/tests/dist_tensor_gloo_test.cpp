// DistTensor on real gloo ranks (forked by the launcher). Each job runs a
// whole matrix inside its ranks, so few jobs cover world sizes 1-4.
//
// Test data encodes its index (value = flat index in the full tensor), and
// expected pieces come from torch.chunk applied to the full tensor in the
// test, never from the layout code under test. Rank bodies return non-zero
// and print the reason instead of using gtest macros (they are forked).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <iostream>
#include <string>

#include "common/error.h"
#include "harness/launch/launcher.h"
#include "harness/launch/rank_env.h"
#include "harness/mesh/device_mesh.h"
#include "reference/io/safetensors.h"
#include "reference/placement/dist_tensor.h"
#include "reference/placement/tests/chunk_oracle.h"

namespace moe::ref {
namespace {

using placement_testing::expectedPiece;
using placement_testing::placementCombos;

// Collects failures of one rank; the body returns failures() != 0.
class RankChecks {
 public:
  explicit RankChecks(int rank) : rank_(rank) {}
  void expectEqual(const std::string& what, const at::Tensor& got, const at::Tensor& want) {
    ++checks_;
    if (got.sizes() == want.sizes() && got.scalar_type() == want.scalar_type() &&
        at::equal(got, want))
      return;
    if (++failures_ <= 5) {
      std::cerr << "rank " << rank_ << ": " << what << ": got " << got.sizes() << " "
                << got.scalar_type() << " vs expected " << want.sizes() << " "
                << want.scalar_type();
      if (got.sizes() == want.sizes() && got.numel() > 0) {
        auto diff = (got.to(at::kDouble) - want.to(at::kDouble)).abs().reshape({-1});
        int64_t i = diff.argmax().item<int64_t>();
        std::cerr << "; first worst flat index " << i << ": "
                  << got.reshape({-1})[i].item<double>() << " vs "
                  << want.reshape({-1})[i].item<double>();
      }
      std::cerr << "\n";
    }
  }
  void expect(bool ok, const std::string& what) {
    ++checks_;
    if (!ok && ++failures_ <= 5) std::cerr << "rank " << rank_ << ": " << what << "\n";
  }
  int failures() const { return failures_; }
  int checks() const { return checks_; }

 private:
  int rank_;
  int failures_ = 0;
  int checks_ = 0;
};

bool layoutPossible(const std::vector<int64_t>& shape, const std::vector<Placement>& ps,
                    const mesh::DeviceMesh& mesh) {
  try {
    for (int r = 0; r < mesh.world()->size(); ++r)
      computeLayout(shape, ps, meshSizes(mesh), meshCoords(mesh, r));
    return true;
  } catch (const HarnessError&) {
    return false;
  }
}

// Partial inputs are built as local = piece * prod(coord_i + 1) over Partial
// mesh dims, so the full value is full * prod(factor_i) with factor =
// k(k+1)/2 (sum) or (k+1)/2 (avg); exact in bf16 for the sizes used.
double partialFactor(const std::vector<Placement>& ps, const std::vector<int>& sizes) {
  double f = 1;
  for (size_t i = 0; i < ps.size(); ++i)
    if (ps[i].isPartial()) {
      const double k = sizes[i];
      f *= ps[i].reduceOp == comm::ReduceOp::kSum ? k * (k + 1) / 2 : (k + 1) / 2;
    }
  return f;
}

std::vector<std::vector<Placement>> allCombos(size_t ndim) {
  const std::vector<Placement> choices{
      Placement::replicate(),          Placement::shard(0),
      Placement::shard(-1),            Placement::stridedShard(0, 2),
      Placement::partial(comm::ReduceOp::kSum), Placement::partial(comm::ReduceOp::kAvg)};
  return placementCombos(choices, ndim);
}

void runMatrix(mesh::DeviceMesh& mesh, RankChecks& checks) {
  const std::vector<int> sizes = meshSizes(mesh);
  const std::vector<int> coords = mesh.coords();
  const auto combos = allCombos(sizes.size());
  // Pairs: all of them on a 1-D mesh; on 2-D a fixed spread of 3 targets per
  // source plus the nested cases (two mesh dims splitting one tensor dim).
  const size_t targetsPer = combos.size() <= 6 ? combos.size() : 3;
  std::vector<std::pair<std::string, std::string>> nested;
  if (sizes.size() == 2)
    nested = {{"Shard(0), Shard(0)", "Shard(0), Replicate()"},
              {"Shard(0), Shard(0)", "Replicate(), Shard(0)"},
              {"Shard(0), Shard(0)", "Shard(-1), Shard(0)"},
              {"Replicate(), Shard(0)", "Shard(0), Shard(0)"},
              {"Partial(sum), Shard(0)", "Shard(0), Shard(0)"},
              {"StridedShard(0, 2), Shard(0)", "Shard(0), StridedShard(0, 2)"},
              {"Shard(0), StridedShard(0, 2)", "Replicate(), Replicate()"},
              {"Partial(sum), Partial(avg)", "Shard(0), StridedShard(0, 2)"}};
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    std::vector<std::vector<int64_t>> shapes{{4, 6}};
    if (dtype == at::kFloat) shapes.push_back({5, 3});
    for (const std::vector<int64_t>& shape : shapes) {
      const at::Tensor full =
          at::arange(shape[0] * shape[1], at::kFloat).reshape(shape).to(dtype);
      for (size_t pi = 0; pi < combos.size(); ++pi) {
        const auto& P = combos[pi];
        if (!layoutPossible(shape, P, mesh)) continue;
        const std::string pName = toString(P) + " " + c10::toString(dtype) + " [" +
                                  std::to_string(shape[0]) + ", " + std::to_string(shape[1]) + "]";
        // Partial-free placements through distribute(); Partial ones built
        // from scaled pieces.
        DistTensor src;
        at::Tensor value = full;
        bool hasPartial = false;
        for (const auto& p : P) hasPartial |= p.isPartial();
        if (!hasPartial) {
          src = DistTensor::distribute(full, mesh, P);
          checks.expectEqual(pName + " distribute", src.local(),
                             expectedPiece(full, P, sizes, coords));
        } else {
          at::Tensor local = expectedPiece(full, P, sizes, coords);
          double scale = 1;
          for (size_t i = 0; i < P.size(); ++i)
            if (P[i].isPartial()) scale *= coords[i] + 1;
          src = DistTensor(local * scale, mesh, P, shape);
          value = full * partialFactor(P, sizes);
        }
        checks.expectEqual(pName + " fullTensor", src.fullTensor(), value);
        std::vector<std::vector<Placement>> targets;
        for (size_t j = 0; j < targetsPer; ++j)
          targets.push_back(combos[targetsPer == combos.size() ? j : (pi * 7 + j * 11) % combos.size()]);
        for (const auto& [from, to] : nested)
          if (parsePlacements(from) == P) targets.push_back(parsePlacements(to));
        for (const auto& Q : targets) {
          if (!layoutPossible(shape, Q, mesh)) continue;
          const std::string what = pName + " -> " + toString(Q);
          DistTensor out = src.redistribute(Q);
          bool qPartial = false;
          for (const auto& p : Q) qPartial |= p.isPartial();
          if (!qPartial)
            checks.expectEqual(what + " local", out.local(), expectedPiece(value, Q, sizes, coords));
          else
            checks.expectEqual(what + " fullTensor", out.fullTensor(), value);
        }
      }
    }
  }
}

// distributeFromSource reads only this rank's slices and equals distribute().
void runSource(mesh::DeviceMesh& mesh, const std::string& dir, RankChecks& checks) {
  const std::vector<int> sizes = meshSizes(mesh);
  const std::vector<int> coords = mesh.coords();
  const int k = mesh.dims().back().size;
  // Every placement shards the last mesh dim; other mesh dims replicate.
  std::vector<std::pair<std::string, std::vector<Placement>>> cases{
      {"experts.gate_up_proj", {Placement::stridedShard(-2, 2)}},
      {"experts.down_proj", {Placement::shard(-1)}},
      {"uneven", {Placement::shard(0)}},
      {"replicated", {Placement::replicate()}}};
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    const std::string path = dir + "/ckpt_" + c10::toString(dtype) + ".safetensors";
    std::vector<std::pair<std::string, at::Tensor>> tensors{
        {"experts.gate_up_proj", at::arange(4 * 8 * 6, at::kFloat).reshape({4, 8, 6}).to(dtype)},
        {"experts.down_proj", at::arange(4 * 6 * 4, at::kFloat).reshape({4, 6, 4}).to(dtype)},
        {"uneven", at::arange(5 * 7, at::kFloat).reshape({5, 7}).to(dtype)},
        {"replicated", at::arange(3 * 5, at::kFloat).reshape({3, 5}).to(dtype)}};
    if (mesh.world()->rank() == 0) io::writeSafetensors(path, tensors);
    mesh.world()->barrier();
    for (size_t i = 0; i < cases.size(); ++i) {
      std::vector<Placement> ps(sizes.size(), Placement::replicate());
      ps.back() = cases[i].second[0];
      const at::Tensor& full = tensors[i].second;
      io::SafetensorsReader reader(path);
      const uint64_t headerBytes = reader.bytesRead();
      DistTensor d = DistTensor::distributeFromSource(cases[i].first, reader, mesh, ps);
      const uint64_t dataBytes = reader.bytesRead() - headerBytes;
      const std::string what = cases[i].first + " " + toString(ps) + " " + c10::toString(dtype);
      checks.expectEqual(what + " from source vs distribute", d.local(),
                         DistTensor::distribute(full, mesh, ps).local());
      checks.expectEqual(what + " from source vs oracle", d.local(),
                         expectedPiece(full, ps, sizes, coords));
      const uint64_t fullBytes = full.numel() * full.element_size();
      const uint64_t localBytes = d.local().numel() * d.local().element_size();
      checks.expect(dataBytes == localBytes,
                    moe::str(what, ": read ", dataBytes, " data bytes for a local piece of ",
                             localBytes));
      if (k > 1 && !ps.back().isReplicate())
        checks.expect(dataBytes < fullBytes, moe::str(what, ": read ", dataBytes,
                                                      " bytes, not fewer than the full ", fullBytes));
      checks.expectEqual(what + " fullTensor", d.fullTensor(), full);
      auto verdict = checkLocal(cases[i].first, mesh.world()->rank(), d.local(), full, d.layout());
      checks.expect(verdict.ok, verdict.message);
    }
    mesh.world()->barrier();  // nobody rewrites the file while others read
  }
}

// A planted wrong input: one rank's piece is perturbed; checkLocal on that
// rank names it and both values, and an all-reduced flag makes every rank
// agree on the verdict.
void runPlantedMismatch(mesh::DeviceMesh& mesh, RankChecks& checks) {
  const int rank = mesh.world()->rank();
  const int victim = mesh.world()->size() - 1;
  at::Tensor full = at::arange(8 * 3, at::kFloat).reshape({8, 3});
  std::vector<Placement> ps(mesh.ndim(), Placement::replicate());
  ps.back() = Placement::shard(0);
  DistTensor d = DistTensor::distribute(full, mesh, ps);
  at::Tensor local = d.local().clone();
  if (rank == victim) local[0][1] = 1000;
  auto verdict = checkLocal("w", rank, local, full, d.layout());
  at::Tensor bad = at::full({1}, verdict.ok ? 0 : 1, at::kLong);
  mesh.world()->allReduce(bad);
  checks.expect(bad.item<int64_t>() == 1, "every rank sees exactly one failing rank");
  if (rank == victim) {
    const int64_t row = d.layout().offsets[0];
    const std::string want = moe::str("rank ", rank, ": tensor 'w': local [0, 1] (global [", row,
                                      ", 1]) = 1000 vs expected ", row * 3 + 1);
    checks.expect(!verdict.ok && verdict.message.find(want) != std::string::npos,
                  "planted mismatch message '" + verdict.message + "' lacks '" + want + "'");
  } else {
    checks.expect(verdict.ok, "unexpected mismatch: " + verdict.message);
  }
  // A local piece of the wrong shape is refused, naming the rank.
  if (mesh.dims().back().size > 1) {
    try {
      DistTensor wrong(full, mesh, ps, {8, 3});
      checks.expect(false, "a replicated piece declared Shard(0) was accepted");
    } catch (const HarnessError& e) {
      checks.expect(std::string(e.what()).find(moe::str("rank ", rank, ":")) != std::string::npos,
                    moe::str("error does not name the rank: ", e.what()));
    }
  }
}

struct MeshCase {
  int nranks;
  std::string mesh;
  std::string name;
};

// gtest prints parameters into the test list that ctest names tests by; the
// default byte dump of this struct contains pointers, so names would change
// from build to build.
void PrintTo(const MeshCase& c, std::ostream* os) { *os << c.name; }

class DistTensorGloo : public ::testing::TestWithParam<MeshCase> {};

TEST_P(DistTensorGloo, MatchesChunkOracleForDistributeRedistributeAndCheckpoint) {
  const MeshCase mc = GetParam();
  std::string pattern = (std::filesystem::temp_directory_path() / "moe_placement_XXXXXX").string();
  ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
  const std::string dir = pattern;

  moe::launch::LaunchOptions o;
  o.nranks = mc.nranks;
  o.timeout = std::chrono::seconds(120);
  auto r = moe::launch::launchLocal(o, [&](const moe::launch::RankContext& ctx) -> int {
    at::set_num_threads(1);
    auto world = moe::launch::initWorld(moe::launch::rankEnvFromEnvironment(),
                                        moe::comm::CommOptions{});
    moe::mesh::DeviceMesh mesh(world, moe::mesh::DeviceMesh::parse(mc.mesh));
    RankChecks checks(ctx.rank);
    runMatrix(mesh, checks);
    runSource(mesh, dir, checks);
    runPlantedMismatch(mesh, checks);
    // Every rank agrees on the verdict.
    at::Tensor failed = at::full({1}, checks.failures(), at::kLong);
    world->allReduce(failed);
    if (ctx.rank == 0)
      std::cerr << mc.mesh << ": " << checks.checks() << " checks per rank\n";
    return failed.item<int64_t>() == 0 ? 0 : 1;
  });
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(r.ok) << r.summary;
}

INSTANTIATE_TEST_SUITE_P(
    Meshes, DistTensorGloo,
    ::testing::Values(MeshCase{1, "{\"tp\":1}", "ws1_tp1"}, MeshCase{2, "{\"ep\":2}", "ws2_ep2"},
                      MeshCase{3, "{\"ep\":3}", "ws3_ep3"},
                      MeshCase{4, "{\"dp\":2,\"ep\":2}", "ws4_dp2_ep2"}),
    [](const ::testing::TestParamInfo<MeshCase>& info) { return info.param.name; });

}  // namespace
}  // namespace moe::ref
