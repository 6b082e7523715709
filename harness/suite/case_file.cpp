#include "harness/suite/case_file.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <type_traits>

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
  } catch (const nlohmann::json::out_of_range& e) {
    // A number too large for a double (1e400): no position is given. It
    // escaped loadCaseFile as an internal error (found by fuzz_case_file).
    fail(path, ": malformed JSON: ", e.what());
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

// An integer field as the T the run needs. The schema admits every JSON
// integer and integral floats (2.0, 1e30); a value outside T's range is a
// user error naming the field (converting it was undefined behaviour: found
// by the case_file fuzz target, fuzz/regressions/case_file/).
template <typename T, typename Json>
T integer(const Json& v, const std::string& field) {
  constexpr T lo = std::numeric_limits<T>::min();
  constexpr T hi = std::numeric_limits<T>::max();
  bool ok = false;
  if (v.is_number_unsigned()) {
    ok = v.template get<uint64_t>() <= static_cast<uint64_t>(hi);
  } else if (v.is_number_integer()) {
    ok = !std::is_unsigned_v<T> && v.template get<int64_t>() >= static_cast<int64_t>(lo);
  } else if (v.is_number_float()) {
    const double d = v.template get<double>();
    // (double)hi + 1 is the first value past hi (2^31, 2^63, 2^64).
    ok = d >= static_cast<double>(lo) && d < static_cast<double>(hi) + 1.0 && d == static_cast<double>(static_cast<T>(d));
  }
  if (!ok) fail(field, ": ", v.dump(), " is not an integer in [", lo, ", ", hi, "]");
  if (v.is_number_float()) return static_cast<T>(v.template get<double>());
  if (v.is_number_unsigned()) return static_cast<T>(v.template get<uint64_t>());
  return static_cast<T>(v.template get<int64_t>());
}
template <typename T, typename Json>
std::vector<T> integers(const Json& list, const std::string& field) {
  std::vector<T> out;
  for (size_t i = 0; i < list.size(); ++i) out.push_back(integer<T>(list[i], moe::str(field, "[", i, "]")));
  return out;
}
template <typename T>
T integerOr(const nlohmann::ordered_json& doc, const char* key, T otherwise) {
  return doc.contains(key) ? integer<T>(doc[key], key) : otherwise;
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
  // Stops multiplying once past world_size: sizes up to 2^31 on 7 dims
  // overflowed int64 (found by the case_file fuzz target).
  int64_t product = 1;
  bool exact = true;  // every size multiplied in: the product is the mesh's rank count
  for (const auto& [k, v] : r.mesh.items()) {
    dims.push_back({k, integer<int>(v, "mesh." + k)});
    if (product <= r.worldSize)
      product *= dims.back().size;
    else
      exact = false;
  }
  if (product != r.worldSize)
    fail("mesh ", r.mesh.dump(), " covers ", exact ? std::to_string(product) : "more than " + std::to_string(r.worldSize),
         " ranks but world_size is ", r.worldSize, ": the product of the mesh sizes must equal the world size");
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
  b.worldSize = integer<int>(doc.at("world_size"), "world_size");
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
  b.steps = integerOr<int64_t>(doc, "steps", 0);
  b.seed = integerOr<uint64_t>(doc, "seed", 0);
  b.batchSize = integerOr<int64_t>(doc, "batch_size", 4);
  b.seqLen = integerOr<int64_t>(doc, "seq_len", 16);
  if (doc.contains("checkpoint")) {
    b.checkpoint = resolvePath(path, doc["checkpoint"].get<std::string>());
    if (b.checkpoint.empty()) fail("checkpoint: '", doc["checkpoint"].get<std::string>(), "' not found");
  }
  b.allowNonFiniteCheckpoint = doc.value("allow_nonfinite_checkpoint", false);
  if (doc.contains("experts_implementation"))
    b.model["experts_implementation"] = doc["experts_implementation"].get<std::string>();
  b.labels = doc.value("labels", std::vector<std::string>{});
  b.timeoutSeconds = doc.value("timeout", 300.0);
  if (doc.contains("save_resume")) {
    const auto& sr = doc["save_resume"];
    b.saveAt = integer<int64_t>(sr.at("save_at"), "save_resume.save_at");
    b.saveFormat = sr.value("format", std::string("sharded"));
    if (b.saveFormat != "sharded" && b.saveFormat != "hf")
      fail("save_resume.format: unknown layout '", b.saveFormat, "' (known: sharded, hf)");
    const auto& rs = sr.at("resume");
    b.resumeWorldSize = integer<int>(rs.at("world_size"), "save_resume.resume.world_size");
    b.resumeMesh = rs.at("mesh");
    const std::string rp = rs.at("plan").get<std::string>();
    const std::string f = findNamedPlan(path, rp);
    if (f.empty()) fail("save_resume.resume.plan: unknown plan '", rp, "' (known plans: ", join(knownPlans(path), ", "), ")");
    b.resumePlan = parseJson<nlohmann::ordered_json>(f, readText(f));
    b.resumeWrapper = rs.value("wrapper", std::string("none"));
    requireWrapper("save_resume.resume.wrapper", b.resumeWrapper);
  }
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
        if (e.contains("ranks")) pe.ranks = integers<int>(e["ranks"], "expect.placements: " + pe.param + ": ranks");
        if (e.contains("placements"))
          pe.placements = "[" + join(e["placements"].get<std::vector<std::string>>(), ", ") + "]";
        if (e.contains("local_shape"))
          pe.localShape = integers<int64_t>(e["local_shape"], "expect.placements: " + pe.param + ": local_shape");
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
  if (saveAt > 0)
    j["save_resume"] = {{"save_at", saveAt},
                        {"format", saveFormat},
                        {"resume",
                         {{"world_size", resumeWorldSize},
                          {"mesh", nlohmann::json::parse(resumeMesh.dump())},
                          {"wrapper", resumeWrapper}}}};
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
          if (axis == "seed") x.seed = integer<uint64_t>(v, "matrix.seed");
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
