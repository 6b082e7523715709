#include "reference/plan/plan.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "common/error.h"
#include "reference/model/params.h"
#include "reference/mutants/mutation_points.h"
#include "reference/plan/style_registry.h"

namespace moe::plan {

Plan Plan::fromJson(const nlohmann::ordered_json& j) {
  Plan p;
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (!it.value().is_string())
        fail("plan: entry \"", it.key(), "\": style must be a string, got ", it.value().dump());
      p.entries.push_back({it.key(), it.value().get<std::string>()});
    }
  } else if (j.is_array()) {
    for (const auto& e : j) {
      if (!e.is_array() || e.size() != 2 || !e[0].is_string() || !e[1].is_string())
        fail("plan: array entries must be [\"pattern\", \"style\"], got ", e.dump());
      p.entries.push_back({e[0].get<std::string>(), e[1].get<std::string>()});
    }
  } else {
    fail("plan: expected an object {pattern: style} or an array of pairs, got ", j.dump());
  }
  return p;
}

Plan Plan::parse(const std::string& text) {
  nlohmann::ordered_json j;
  try {
    j = nlohmann::ordered_json::parse(text);
  } catch (const std::exception& e) {
    fail("plan: malformed JSON: ", e.what());
  }
  return fromJson(j);
}

Plan Plan::fromFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail("plan ", path, ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return parse(ss.str());
  } catch (const HarnessError& e) {
    throw e.withContext(path);
  }
}

nlohmann::ordered_json Plan::toJson() const {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  for (const auto& e : entries) j[e.pattern] = e.style;
  return j;
}

namespace {

bool segmentsMatch(const std::vector<std::string>& pat, const std::vector<std::string>& name,
                   size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (pat[i] != "*" && pat[i] != name[i]) return false;
  return true;
}

std::string joinFirst(const std::vector<std::string>& segs, size_t n) {
  std::string out;
  for (size_t i = 0; i < n; ++i) out += (i ? "." : "") + segs[i];
  return out;
}

}  // namespace

bool patternMatches(const std::string& pattern, const std::string& name) {
  return dottedPatternMatches(pattern, name);
}

std::string ParamPlacement::primaryStyle() const {
  for (size_t i = 0; i < styles.size(); ++i)
    if (!styles[i].empty() && placements[i].isSharded()) return styles[i];
  for (const auto& s : styles)
    if (!s.empty()) return s;
  return "";
}

bool ParamPlacement::shardedByStyle() const {
  const std::string s = primaryStyle();
  return !s.empty() && findStyle(s).shardsParameters();
}

const ParamPlacement& AppliedPlan::param(const std::string& name) const {
  for (const auto& p : params)
    if (p.name == name) return p;
  fail("applied plan: no parameter named ", name);
}

ModuleComm AppliedPlan::comm(const std::string& module, const std::string& dim) const {
  auto it = moduleComm.find(module);
  if (it == moduleComm.end()) return {};
  auto d = it->second.find(dim);
  return d == it->second.end() ? ModuleComm{} : d->second;
}

ModuleComm AppliedPlan::comm(const std::string& module) const {
  ModuleComm out;
  auto it = moduleComm.find(module);
  if (it != moduleComm.end())
    for (const auto& [dim, c] : it->second) out |= c;
  return out;
}

std::vector<std::string> AppliedPlan::dimsDeclaring(bool (*pred)(const ModuleComm&)) const {
  std::vector<std::string> dims;
  for (const auto& [module, byDim] : moduleComm)
    for (const auto& [dim, c] : byDim)
      if (pred(c) && std::find(dims.begin(), dims.end(), dim) == dims.end()) dims.push_back(dim);
  return dims;
}

std::vector<const ParamPlacement*> AppliedPlan::paramsOf(const std::string& module) const {
  std::vector<const ParamPlacement*> out;
  const std::string prefix = module + ".";
  for (const auto& p : params)
    if (p.name.rfind(prefix, 0) == 0) out.push_back(&p);
  return out;
}

AppliedPlan applyPlan(const Plan& plan, const ref::ModelConfig& config,
                      const mesh::MeshShape& mesh) {
  struct Entry {
    const PlanEntry* entry;
    const PlanStyle* style;
    std::vector<std::string> segs;
    bool matched = false;
  };
  std::vector<Entry> entries;
  for (const auto& e : plan.entries) {
    try {
      entries.push_back({&e, &findStyle(e.style), splitDotted(e.pattern)});
    } catch (const HarnessError& err) {
      throw err.withContext("plan entry \"" + e.pattern + "\"");
    }
  }
  AppliedPlan out;
  const int ndim = mesh.ndim();
  // pass 2 bookkeeping: (module, mesh dim) already decided.
  std::map<std::pair<std::string, std::string>, bool> moduleDecided;
  for (const auto& spec : ref::parameterSpecs(config)) {
    ParamPlacement pp;
    pp.name = spec.name;
    pp.globalShape = spec.shape;
    pp.placements.assign(ndim, ref::Placement::replicate());
    const auto segs = splitDotted(spec.name);
    pp.isExpert = segs.size() >= 2 && segs[segs.size() - 2] == "experts" && spec.shape.size() >= 2;
    std::vector<std::string> decidedDims;
    std::vector<std::string> styles(ndim);
    for (auto& en : entries) {
      if (en.segs.size() > segs.size() || !segmentsMatch(en.segs, segs, en.segs.size())) continue;
      en.matched = true;
      const std::string dim = en.style->meshDim();
      const bool isParamPattern = en.segs.size() == segs.size();
      // pass 1
      bool wonPlacement = false;
      if (en.style->placesParameters() &&
          std::find(decidedDims.begin(), decidedDims.end(), dim) == decidedDims.end()) {
        decidedDims.push_back(dim);
        wonPlacement = true;
        ParamTarget target{spec.name, spec.shape, pp.isExpert};
        StyleContext ctx{config, mesh, mesh.size(dim)};
        ref::Placement pl;
        try {
          pl = en.style->placeParameter(target, ctx);
          if (auto f = mutants::points().placeParameter) f(en.style->name(), spec.name, pl);
        } catch (const HarnessError& err) {
          throw err.withContext("plan entry \"" + en.entry->pattern + "\"");
        }
        const int idx = mesh.index(dim);
        if (idx >= 0) {
          pp.placements[idx] = pl;
          styles[idx] = en.style->name();
        }
      }
      // pass 2 (module of the pattern; parent module for a parameter pattern).
      // A parameter style communicates for the modules whose parameters it
      // placed; a module-only style: first match per (module, mesh dim).
      if (!mesh.has(dim)) continue;
      const std::string module =
          joinFirst(segs, isParamPattern ? segs.size() - 1 : en.segs.size());
      bool applies = wonPlacement;
      if (!en.style->placesParameters()) {
        auto key = std::make_pair(module, dim);
        applies = !moduleDecided[key];
        moduleDecided[key] = true;
      }
      if (applies) {
        const ModuleComm declared = en.style->moduleComm(module);
        if (declared.any() || !en.style->placesParameters()) {
          out.moduleComm[module][dim] |= declared;
          auto& ms = out.moduleStyles[module];
          if (ms.find(en.style->name()) == std::string::npos)
            ms += (ms.empty() ? "" : "+") + en.style->name();
        }
      }
    }
    pp.styles = styles;
    for (const auto& s : styles)
      if (!s.empty()) pp.style += (pp.style.empty() ? "" : "+") + s;
    out.params.push_back(std::move(pp));
  }
  for (const auto& en : entries)
    if (!en.matched)
      fail("plan entry \"", en.entry->pattern, "\" (style ", en.entry->style,
           ") matches no parameter or module of the model");
  return out;
}

}  // namespace moe::plan
