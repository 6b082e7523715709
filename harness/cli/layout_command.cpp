// `moe-harness layout`: each rank's local shape, global offset, index ranges
// and flat global indices of a tensor, as the harness lays it out (contract:
// layout_command.h; the oracle that compares it with upstream DTensor:
// harness/cli/tests/placement_oracle.py).
#include "harness/cli/layout_command.h"

#include <CLI/CLI.hpp>

#include <iostream>
#include <map>
#include <regex>
#include <sstream>

#include "common/error.h"
#include "harness/cli/commands.h"
#include "harness/mutate/mutant_registry.h"
#include "harness/suite/case_file.h"
#include "reference/io/safetensors_header.h"
#include "reference/model/config.h"
#include "reference/mutants/mutation_points.h"
#include "reference/plan/plan.h"

namespace moe::cli {

namespace {

std::vector<int64_t> parseShapeArg(const std::string& text) {
  std::vector<int64_t> shape;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t used = 0;
      const long long v = std::stoll(item, &used);
      if (used != item.size() || v < 0) throw std::invalid_argument(item);
      shape.push_back(v);
    } catch (const std::exception&) {
      fail("--shape '", text, "': '", item, "' is not a size >= 0 (expected e.g. 8,6,4)");
    }
  }
  if (shape.empty()) fail("--shape '", text, "': no sizes (expected e.g. 8,6,4)");
  return shape;
}

// What the loaders slice `param` with (dist_model.cpp loadLocalParams,
// loading.cpp rank0_broadcast): the declared placements after the mutation
// point.
std::vector<ref::Placement> loaderPlacements(const plan::ParamPlacement& param) {
  auto placements = param.placements;
  if (auto f = mutants::points().loaderPlacements) f(param, placements);
  return placements;
}

std::string coordsText(const mesh::MeshShape& mesh, const std::vector<int>& coords) {
  std::string s;
  for (size_t d = 0; d < coords.size(); ++d) s += moe::str(d ? "," : "", mesh.dims()[d].name, "=", coords[d]);
  return s;
}

void printText(const mesh::MeshShape& mesh, const nlohmann::ordered_json& t, std::ostream& os) {
  os << t["param"].get<std::string>() << " " << t["shape"].dump() << " " << t["placements"].get<std::string>();
  if (t["layout_placements"] != t["placements"])
    os << " (sliced as " << t["layout_placements"].get<std::string>() << ")";
  os << " on " << mesh.describe() << "\n";
  for (const auto& r : t["ranks"]) {
    const auto coords = r["coords"].get<std::vector<int>>();
    os << "  rank " << r["rank"].get<int>() << " (" << coordsText(mesh, coords) << "): local "
       << r["local_shape"].dump() << ", ";
    os << (r["box"].get<bool>() ? "offset " : "first element at ") << r["offsets"].dump() << ", dims";
    for (const auto& dim : r["ranges"]) {
      os << " {";
      bool first = true;
      for (const auto& range : dim) {
        const int64_t b = range[0].get<int64_t>(), n = range[1].get<int64_t>();
        os << (first ? "" : ", ") << "[" << b << ", " << b + n << ")";
        first = false;
      }
      os << "}";
    }
    const auto& runs = r["index_runs"];
    os << ", flat";
    size_t shown = 0;
    for (const auto& run : runs) {
      if (++shown > 6) break;
      const int64_t b = run[0].get<int64_t>(), n = run[1].get<int64_t>();
      os << " [" << b << ", " << b + n << ")";
    }
    if (runs.size() > 6) os << " ... (" << runs.size() << " runs)";
    if (runs.empty()) os << " none";
    os << "\n";
  }
}

struct Args {
  std::string mesh, placements, shape, name = "tensor";
  std::vector<std::string> cases;
  std::string filter, mutant;
  bool json = false;
};

void runLayout(const Args& a) {
  if (!a.mutant.empty()) mutants::activateMutant(a.mutant);
  nlohmann::ordered_json out;
  out["mutant"] = a.mutant;
  out["layouts"] = nlohmann::ordered_json::array();
  std::ostream& os = std::cout;

  auto emit = [&](const std::string& source, const std::string& wrapper, const mesh::MeshShape& shape,
                  const std::vector<plan::ParamPlacement>& params) {
    nlohmann::ordered_json l;
    l["source"] = source;
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& d : shape.dims()) m[d.name] = d.size;
    l["mesh"] = m;
    l["world_size"] = shape.worldSize();
    l["wrapper"] = wrapper;
    l["tensors"] = nlohmann::ordered_json::array();
    if (!a.json) os << "== " << source << ": mesh " << shape.describe() << ", wrapper " << wrapper << "\n";
    for (const auto& p : params) {
      auto t = tensorLayoutJson(shape, p);
      if (!a.json) printText(shape, t, os);
      l["tensors"].push_back(std::move(t));
    }
    out["layouts"].push_back(std::move(l));
  };

  if (!a.cases.empty()) {
    if (!a.mesh.empty() || !a.placements.empty() || !a.shape.empty())
      fail("layout: --case cannot be combined with --mesh, --placements or --shape");
    std::regex filter;
    if (!a.filter.empty()) {
      try {
        filter = std::regex(a.filter);
      } catch (const std::regex_error& e) {
        fail("--filter: '", a.filter, "' is not a valid regular expression (", e.what(), ")");
      }
    }
    // A matrix repeats one plan on one mesh (dtypes, loading paths): each
    // distinct (model, mesh, plan) is listed once, under its first run.
    std::map<std::string, std::string> seen;
    for (const auto& f : cases::findCaseFiles(a.cases)) {
      const cases::CaseFile c = cases::loadCaseFile(f);
      if (!c.error.empty()) fail("layout: ", c.error);
      for (const auto& r : c.runs) {
        if (!a.filter.empty() && !std::regex_search(r.id, filter)) continue;
        const std::string key = r.model.dump() + "|" + r.mesh.dump() + "|" + r.plan.dump() + "|" + r.wrapper;
        if (!seen.emplace(key, r.id).second) continue;
        std::vector<mesh::MeshDim> dims;
        for (const auto& [k, v] : r.mesh.items()) dims.push_back({k, v.get<int>()});
        const mesh::MeshShape shape(dims, r.worldSize);
        const auto applied =
            plan::applyPlan(plan::Plan::fromJson(r.plan), ref::ModelConfig::fromJson(r.model), shape);
        emit(r.id, r.wrapper, shape, applied.params);
      }
    }
    if (seen.empty()) fail("layout: no case runs selected");
  } else {
    if (a.mesh.empty() || a.placements.empty() || a.shape.empty())
      fail("layout: give --mesh, --placements and --shape (or --case)");
    const auto dims = parseMeshArg(a.mesh);
    int world = 1;
    for (const auto& d : dims) world *= d.size;
    mesh::DeviceMesh::validate(dims, world);
    plan::ParamPlacement p;
    p.name = a.name;
    p.globalShape = parseShapeArg(a.shape);
    p.placements = ref::parsePlacements(a.placements);
    emit("cli", "none", mesh::MeshShape(dims, world), {p});
  }
  if (a.json) os << out.dump() << std::endl;
}

}  // namespace

std::vector<mesh::MeshDim> parseMeshArg(const std::string& text) {
  const auto first = text.find_first_not_of(" \t");
  if (first != std::string::npos && text[first] == '{') return mesh::DeviceMesh::parse(text);
  std::vector<mesh::MeshDim> dims;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0)
      fail("--mesh '", text, "': '", item, "' is not NAME=SIZE (expected e.g. ep=2,dp=2 or {\"ep\":2,\"dp\":2})");
    int size = 0;
    try {
      size_t used = 0;
      size = std::stoi(item.substr(eq + 1), &used);
      if (used != item.size() - eq - 1) throw std::invalid_argument(item);
    } catch (const std::exception&) {
      fail("--mesh '", text, "': size of '", item.substr(0, eq), "' is not an integer");
    }
    dims.push_back({item.substr(0, eq), size});
  }
  if (dims.empty()) fail("--mesh '", text, "': no dims (expected e.g. ep=2,dp=2)");
  return dims;
}

std::vector<std::pair<int64_t, int64_t>> flatIndexRuns(const ref::LocalLayout& layout) {
  std::vector<std::pair<int64_t, int64_t>> runs;
  if (layout.numel() == 0) return runs;
  const size_t ndim = layout.globalShape.size();
  if (ndim == 0) return {{0, 1}};
  // stride[d]: row-major stride of dim d in the global tensor.
  std::vector<int64_t> stride(ndim, 1);
  for (size_t d = ndim - 1; d > 0; --d) stride[d - 1] = stride[d] * layout.globalShape[d];
  // Walk the local elements in row-major order, one innermost range at a time.
  auto walk = [&](auto&& self, size_t d, int64_t base) -> void {
    for (const ref::IndexRange& r : layout.ranges[d]) {
      if (d + 1 == ndim) {
        const int64_t start = base + r.start;
        if (!runs.empty() && runs.back().first + runs.back().second == start)
          runs.back().second += r.length;
        else
          runs.emplace_back(start, r.length);
        continue;
      }
      for (int64_t i = r.start; i < r.start + r.length; ++i) self(self, d + 1, base + i * stride[d]);
    }
  };
  walk(walk, 0, 0);
  return runs;
}

nlohmann::ordered_json tensorLayoutJson(const mesh::MeshShape& mesh, const plan::ParamPlacement& param) {
  std::vector<int> sizes;
  for (const auto& d : mesh.dims()) sizes.push_back(d.size);
  const auto sliced = loaderPlacements(param);
  nlohmann::ordered_json t;
  t["param"] = param.name;
  t["shape"] = param.globalShape;
  t["placements"] = ref::toString(param.placements);
  t["layout_placements"] = ref::toString(sliced);
  t["ranks"] = nlohmann::ordered_json::array();
  for (int rank = 0; rank < mesh.worldSize(); ++rank) {
    const auto coords = mesh.coordsOf(rank);
    ref::LocalLayout l;
    try {
      l = ref::computeLayout(param.globalShape, sliced, sizes, coords);
    } catch (const HarnessError& e) {
      throw e.withContext(moe::str("layout of ", param.name, " ", io::formatShape(param.globalShape), " ",
                                   ref::toString(sliced), " on ", mesh.describe(), ", rank ", rank));
    }
    nlohmann::ordered_json r;
    r["rank"] = rank;
    r["coords"] = coords;
    r["local_shape"] = l.localShape;
    r["box"] = l.isBox();
    r["offsets"] = l.offsets;
    nlohmann::ordered_json ranges = nlohmann::ordered_json::array();
    for (const auto& dim : l.ranges) {
      nlohmann::ordered_json rs = nlohmann::ordered_json::array();
      for (const auto& x : dim) rs.push_back({x.start, x.length});
      ranges.push_back(std::move(rs));
    }
    r["ranges"] = std::move(ranges);
    nlohmann::ordered_json runs = nlohmann::ordered_json::array();
    for (const auto& [b, n] : flatIndexRuns(l)) runs.push_back({b, n});
    r["index_runs"] = std::move(runs);
    t["ranks"].push_back(std::move(r));
  }
  return t;
}

void addLayoutCommand(CLI::App& app) {
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand(
      "layout", "Each rank's local shape, offset and global elements of a tensor (or of every parameter of a case's plan), "
                "as the harness lays them out; the upstream-DTensor oracle compares this");
  cmd->add_option("--mesh", a->mesh, "mesh: ep=2,dp=2 or {\"ep\":2,\"dp\":2} (mesh order: first = outermost)");
  cmd->add_option("--placements", a->placements, "one placement per mesh dim: \"[StridedShard(0, 2), Shard(0)]\"");
  cmd->add_option("--shape", a->shape, "global shape: 8,6,4");
  cmd->add_option("--name", a->name, "the tensor's name in the output")->capture_default_str();
  cmd->add_option("--case", a->cases, "case files or directories: every parameter of each run's plan (repeatable)");
  cmd->add_option("--filter", a->filter, "with --case: only runs whose id matches this regular expression");
  cmd->add_flag("--json", a->json, "one JSON document (layout_command.h) instead of text");
  cmd->add_option("--mutant", a->mutant, "plant a known bug first (`moe-harness mutate --list`); default: none");
  cmd->callback([a] { runLayout(*a); });
}

}  // namespace moe::cli

namespace moe::cli {
MOE_REGISTER(Command, FunctionCommand, "layout", moe::cli::addLayoutCommand);
}  // namespace moe::cli
