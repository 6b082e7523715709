#include "harness/suite/case_file.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "harness/suite/json_schema.h"
#include "common/error.h"
#include "harness/checks/check_registry.h"
#include "harness/comm/factory.h"
#include "harness/mesh/device_mesh.h"
#include "reference/model/config.h"
#include "reference/parallel/param_store.h"
#include "reference/plan/plan.h"

namespace moe::cases {
namespace fs = std::filesystem;
namespace {

std::string readText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read ", path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Parses JSON text; a syntax error names the file, line and column.
template <typename Json>
Json parseJson(const std::string& path, const std::string& text) {
  try {
    return Json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    // e.byte is 1-based and points just past the offending character.
    const size_t offset = e.byte > 0 ? e.byte - 1 : 0;
    std::string what = e.what();
    // nlohmann's text repeats "[json.exception.parse_error.101] parse error at
    // line 3, column 5: "; keep only the reason after the last ": ".
    const auto cut = what.find("syntax error");
    if (cut != std::string::npos) what = what.substr(cut);
    fail(describeParseError(path, text, offset, "malformed JSON: " + what));
  }
}

// `rel` relative to `base`'s directory when it exists there, else relative
// to the shipped cases directory; "" when neither exists.
std::string resolvePath(const std::string& caseFile, const std::string& rel) {
  const fs::path p(rel);
  if (p.is_absolute()) return fs::exists(p) ? p.string() : "";
  const fs::path here = fs::path(caseFile).parent_path() / p;
  if (fs::exists(here)) return fs::absolute(here).lexically_normal().string();
  const fs::path shipped = fs::path(defaultCasesDir()) / p;
  if (fs::exists(shipped)) return shipped.lexically_normal().string();
  return "";
}

// A named plan: plans/<name>.json in the case's directory or an ancestor,
// then the shipped cases/plans/.
std::string findNamedPlan(const std::string& caseFile, const std::string& name) {
  for (fs::path dir = fs::absolute(caseFile).parent_path();; dir = dir.parent_path()) {
    for (const char* sub : {"plans", "cases/plans"}) {
      const fs::path f = dir / sub / (name + ".json");
      if (fs::exists(f)) return f.lexically_normal().string();
    }
    if (dir == dir.root_path() || dir.empty()) break;
  }
  const fs::path shipped = fs::path(defaultCasesDir()) / "plans" / (name + ".json");
  return fs::exists(shipped) ? shipped.string() : "";
}

std::vector<std::string> knownPlans(const std::string& caseFile) {
  std::vector<std::string> out;
  const fs::path dir = fs::path(defaultCasesDir()) / "plans";
  if (fs::is_directory(dir))
    for (const auto& e : fs::directory_iterator(dir))
      if (e.path().extension() == ".json") out.push_back(e.path().stem().string());
  std::sort(out.begin(), out.end());
  return out;
}

std::string join(const std::vector<std::string>& v, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? sep : "") + v[i];
  return out;
}

// Everything a case's runs share, after the schema and semantic checks.
struct Parsed {
  RunSpec base;
  std::vector<std::string> dtypes;
  std::map<std::string, Tolerance> tolerances;
  std::vector<std::pair<std::string, std::vector<nlohmann::json>>> axes;  // fixed order
};

Tolerance toleranceOf(const nlohmann::json& j) {
  Tolerance t;
  t.lossAbs = j.at("loss_abs").get<double>();
  if (j.contains("rel_norm")) t.relNorm = j["rel_norm"].get<double>();
  if (j.contains("rtol")) t.rtol = j["rtol"].get<double>();
  if (j.contains("atol")) t.atol = j["atol"].get<double>();
  return t;
}

// Names the schema leaves open are checked against the registries, so the
// case format cannot drift from what the binary has: "wrapper: unknown
// data-parallel wrapper 'x' (known: fsdp, none, zero3)".
void requireKnown(const std::string& field, const char* kind, const std::string& name,
                  const std::vector<std::string>& known) {
  if (std::find(known.begin(), known.end(), name) == known.end())
    fail(field, ": unknown ", kind, " '", name, "' (known: ", join(known, ", "), ")");
}
void requireWrapper(const std::string& field, const std::string& name) {
  requireKnown(field, parallel::StoreFactory::kPluginKind, name, parallel::paramStoreNames());
}

void applyWrapper(RunSpec& r, const nlohmann::json& w) {
  if (w.is_string()) {
    r.wrapper = w.get<std::string>();
    requireWrapper("wrapper", r.wrapper);
    return;
  }
  r.wrapper = w.at("kind").get<std::string>();
  requireWrapper("wrapper.kind", r.wrapper);
  if (w.contains("fsdp_experts")) r.fsdpExperts = w["fsdp_experts"].get<std::string>();
}

// Semantic checks that need the model, the mesh and the plan together.
void checkMeshAndPlan(const RunSpec& r) {
  std::vector<mesh::MeshDim> dims;
  int64_t product = 1;
  for (const auto& [k, v] : r.mesh.items()) {
    dims.push_back({k, v.get<int>()});
    product *= v.get<int>();
  }
  if (product != r.worldSize)
    fail("mesh ", r.mesh.dump(), " covers ", product, " ranks but world_size is ", r.worldSize,
         ": the product of the mesh sizes must equal the world size");
  const mesh::MeshShape shape(dims, r.worldSize);
  ref::ModelConfig cfg;
  try {
    cfg = ref::ModelConfig::fromJson(r.model);
  } catch (const HarnessError& e) {
    throw e.withContext("model (" + r.modelSource + ")");
  }
  const int ep = shape.size("ep");
  if (cfg.numExperts > 0 && cfg.numExperts % ep != 0)
    fail("num_experts ", cfg.numExperts, " of the model is not divisible by the ep size ", ep,
         " of mesh ", r.mesh.dump());
  plan::AppliedPlan applied;
  try {
    applied = plan::applyPlan(plan::Plan::fromJson(r.plan), cfg, shape);
  } catch (const HarnessError& e) {
    throw e.withContext("plan " + r.planSource + " on mesh " + r.mesh.dump());
  }
  for (const auto& e : r.expectedPlacements) {
    applied.param(e.param);  // throws naming the unknown parameter
    if (e.placements) {
      std::vector<ref::Placement> ps;
      try {
        ps = ref::parsePlacements(*e.placements);
      } catch (const HarnessError& err) {
        throw err.withContext("expect.placements: " + e.param);
      }
      if (static_cast<int>(ps.size()) != shape.ndim())
        fail("expect.placements: ", e.param, ": ", ps.size(), " placements for a mesh of ", shape.ndim(), " dims");
    }
    for (int rank : e.ranks)
      if (rank >= r.worldSize) fail("expect.placements: ", e.param, ": rank ", rank, " is outside world_size ", r.worldSize);
  }
}

Parsed parseCase(const std::string& path, const nlohmann::ordered_json& doc) {
  Parsed p;
  RunSpec& b = p.base;
  b.caseFile = path;
  b.caseName = doc.at("name").get<std::string>();
  b.description = doc.value("description", "");
  // Model: a path or inline; experts_implementation overrides the config's.
  const auto& model = doc.at("model");
  if (model.is_string()) {
    const std::string f = resolvePath(path, model.get<std::string>());
    if (f.empty()) fail("model: config file '", model.get<std::string>(), "' not found (relative to the case file)");
    b.modelSource = f;
    b.model = parseJson<nlohmann::json>(f, readText(f));
  } else {
    b.modelSource = "inline";
    b.model = nlohmann::json::parse(model.dump());
  }
  b.worldSize = doc.at("world_size").get<int>();
  b.backend = doc.value("backend", "gloo");
  b.device = doc.value("device", "");
  // nccl with device cpu can never run: a broken case, not a run error.
  if (b.backend == "nccl" && b.device == "cpu")
    fail("device: 'cpu' with backend 'nccl': NCCL moves CUDA tensors only (use backend gloo, or device cuda)");
  b.mesh = doc.at("mesh");
  const auto& plan = doc.at("plan");
  if (plan.is_string()) {
    const std::string s = plan.get<std::string>();
    std::string f;
    if (s.size() > 5 && s.substr(s.size() - 5) == ".json") {
      f = resolvePath(path, s);
      if (f.empty()) fail("plan: file '", s, "' not found (relative to the case file)");
    } else {
      f = findNamedPlan(path, s);
      if (f.empty()) fail("plan: unknown plan '", s, "' (known plans: ", join(knownPlans(path), ", "), ")");
    }
    b.planSource = moe::str("'", s, "' (", f, ")");
    b.plan = parseJson<nlohmann::ordered_json>(f, readText(f));
  } else {
    b.planSource = "inline";
    b.plan = plan;
  }
  if (doc.contains("wrapper")) applyWrapper(b, nlohmann::json::parse(doc["wrapper"].dump()));
  b.loading = doc.value("loading", "shard_on_read");
  b.steps = doc.at("steps").get<int64_t>();
  b.seed = doc.value("seed", uint64_t{0});
  b.batchSize = doc.value("batch_size", int64_t{4});
  b.seqLen = doc.value("seq_len", int64_t{16});
  if (doc.contains("checkpoint")) {
    b.checkpoint = resolvePath(path, doc["checkpoint"].get<std::string>());
    if (b.checkpoint.empty()) fail("checkpoint: '", doc["checkpoint"].get<std::string>(), "' not found");
  }
  b.allowNonFiniteCheckpoint = doc.value("allow_nonfinite_checkpoint", false);
  if (doc.contains("experts_implementation"))
    b.model["experts_implementation"] = doc["experts_implementation"].get<std::string>();
  b.labels = doc.value("labels", std::vector<std::string>{});
  b.timeoutSeconds = doc.value("timeout", 300.0);
  b.checks.clear();  // empty: every check run-plan reports decides
  if (doc.contains("expect")) {
    const auto& ex = doc["expect"];
    if (ex.contains("checks")) b.checks = ex["checks"].get<std::vector<std::string>>();
    for (const auto& c : b.checks)
      requireKnown("expect.checks", checks::Check::kPluginKind, c, checks::CheckRegistry::instance().names());
    if (ex.contains("placements"))
      for (const auto& e : ex["placements"]) {
        PlacementExpectation pe;
        pe.param = e.at("param").get<std::string>();
        pe.ranks = e.value("ranks", std::vector<int>{});
        if (e.contains("placements"))
          pe.placements = "[" + join(e["placements"].get<std::vector<std::string>>(), ", ") + "]";
        if (e.contains("local_shape")) pe.localShape = e["local_shape"].get<std::vector<int64_t>>();
        b.expectedPlacements.push_back(pe);
      }
    // The case's own expectations always decide, whatever else it selects.
    const std::string expectedPlacements = "expected_placements";
    if (!b.checks.empty() && !b.expectedPlacements.empty() &&
        std::find(b.checks.begin(), b.checks.end(), expectedPlacements) == b.checks.end())
      b.checks.push_back(expectedPlacements);
    // A run whose values became non-finite is a failed run under any
    // selection: the finite check always decides too (docs/checks.md).
    const std::string finite = "finite";
    if (!b.checks.empty() && std::find(b.checks.begin(), b.checks.end(), finite) == b.checks.end())
      b.checks.push_back(finite);
  }

  p.dtypes = doc.at("dtypes").get<std::vector<std::string>>();
  for (const auto& [dt, tol] : doc.at("tolerances").items())
    p.tolerances[dt] = toleranceOf(nlohmann::json::parse(tol.dump()));
  for (const auto& dt : p.dtypes)
    if (!p.tolerances.count(dt))
      fail("tolerances: no tolerance for dtype '", dt, "' (every dtype in dtypes needs loss_abs and rtol+atol or rel_norm)");

  if (doc.contains("matrix")) {
    const auto& m = doc["matrix"];
    for (const char* axis : {"loading", "wrapper", "experts_implementation", "seed"})
      if (m.contains(axis)) {
        std::vector<nlohmann::json> values;
        for (const auto& v : m[axis]) {
          values.push_back(nlohmann::json::parse(v.dump()));
          if (std::string(axis) == "wrapper") requireWrapper("matrix.wrapper", v.get<std::string>());
        }
        p.axes.push_back({axis, values});
      }
  }
  return p;
}

std::string idPart(const std::string& axis, const nlohmann::json& v) {
  if (axis == "seed") return "seed" + v.dump();
  return v.get<std::string>();
}

}  // namespace

nlohmann::json Tolerance::toJson() const {
  nlohmann::json j = {{"loss_abs", lossAbs}};
  if (relNorm) j["rel_norm"] = *relNorm;
  if (rtol) j["rtol"] = *rtol;
  if (atol) j["atol"] = *atol;
  return j;
}

bool RunSpec::hasLabel(const std::string& l) const {
  return std::find(labels.begin(), labels.end(), l) != labels.end();
}

nlohmann::json RunSpec::toJson() const {
  nlohmann::json j = {{"id", id},
                      {"case", caseName},
                      {"case_file", caseFile},
                      {"description", description},
                      {"model", modelSource},
                      {"world_size", worldSize},
                      {"backend", backend},
                      {"device", device.empty() ? comm::defaultDeviceType(backend) : device},
                      {"mesh", nlohmann::json::parse(mesh.dump())},
                      {"plan", planSource},
                      {"wrapper", wrapper},
                      {"loading", loading},
                      {"experts_implementation", model.value("experts_implementation", "grouped")},
                      {"dtype", dtype},
                      {"steps", steps},
                      {"seed", seed},
                      {"batch_size", batchSize},
                      {"seq_len", seqLen},
                      {"tolerance", tolerance.toJson()},
                      {"checks", checks.empty() ? nlohmann::json("all") : nlohmann::json(checks)},
                      {"labels", labels},
                      {"timeout", timeoutSeconds}};
  if (!fsdpExperts.empty()) j["fsdp_experts"] = fsdpExperts;
  if (!checkpoint.empty()) j["checkpoint"] = checkpoint;
  if (allowNonFiniteCheckpoint) j["allow_nonfinite_checkpoint"] = true;
  return j;
}

std::string describeParseError(const std::string& file, const std::string& text, size_t offset,
                               const std::string& what) {
  size_t line = 1, col = 1;
  for (size_t i = 0; i < offset && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++line;
      col = 1;
    } else {
      ++col;
    }
  }
  return moe::str(file, ":", line, ":", col, ": ", what);
}

std::string defaultCasesDir() {
#ifdef MOE_CASES_DIR
  return MOE_CASES_DIR;
#else
  return "cases";
#endif
}

CaseFile loadCaseFile(const std::string& path) {
  CaseFile cf;
  cf.path = path;
  cf.name = fs::path(path).stem().string();
  try {
    const std::string text = readText(path);
    const auto doc = parseJson<nlohmann::ordered_json>(path, text);
    const auto violations = caseSchema().validate(nlohmann::json::parse(doc.dump()));
    if (!violations.empty()) {
      std::string msg = moe::str(path, ": does not match cases/schema.json:");
      for (const auto& v : violations) msg += "\n  " + v.describe();
      fail(msg);
    }
    cf.name = doc.at("name").get<std::string>();
    cf.labels = doc.value("labels", std::vector<std::string>{});
    Parsed p;
    try {
      p = parseCase(path, doc);
    } catch (const HarnessError& e) {
      throw e.withContext(path);
    }
    // dtypes x axes, dtype outermost, axes in the fixed order.
    std::vector<RunSpec> runs;
    for (const auto& dt : p.dtypes) {
      RunSpec r = p.base;
      r.dtype = dt;
      r.tolerance = p.tolerances.at(dt);
      r.id = r.caseName + "." + dt;
      runs.push_back(r);
    }
    for (const auto& [axis, values] : p.axes) {
      std::vector<RunSpec> next;
      for (const auto& r : runs)
        for (const auto& v : values) {
          RunSpec x = r;
          x.id += "." + idPart(axis, v);
          if (axis == "loading") x.loading = v.get<std::string>();
          if (axis == "wrapper") x.wrapper = v.get<std::string>();
          if (axis == "experts_implementation") x.model["experts_implementation"] = v.get<std::string>();
          if (axis == "seed") x.seed = v.get<uint64_t>();
          next.push_back(x);
        }
      runs = std::move(next);
    }
    // The mesh, model and plan are the same for every run of the case.
    try {
      checkMeshAndPlan(runs.front());
    } catch (const HarnessError& e) {
      throw e.withContext(path);
    }
    cf.runs = std::move(runs);
  } catch (const HarnessError& e) {
    cf.error = e.what();
    cf.runs.clear();
  }
  return cf;
}

std::vector<std::string> findCaseFiles(const std::vector<std::string>& paths) {
  std::vector<std::string> out;
  for (const auto& p : paths) {
    if (fs::is_directory(p)) {
      std::vector<std::string> files;
      for (const auto& e : fs::directory_iterator(p))
        if (e.is_regular_file() && e.path().extension() == ".json" && e.path().filename() != "schema.json")
          files.push_back(e.path().string());
      std::sort(files.begin(), files.end());
      out.insert(out.end(), files.begin(), files.end());
    } else if (fs::exists(p)) {
      out.push_back(p);
    } else {
      fail("no such case file or directory: ", p);
    }
  }
  return out;
}

}  // namespace moe::cases
