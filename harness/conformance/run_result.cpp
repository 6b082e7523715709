#include "harness/conformance/run_result.h"

#include <unistd.h>

#include "common/error.h"
#include "common/json_number.h"
#include "torch/version.h"

namespace moe::conformance {

nlohmann::json RunResult::toJson() const {
  nlohmann::json j;
  j["config"] = config;
  j["mesh"] = mesh;
  j["plan"] = plan;
  j["dtype"] = dtype;
  j["load"] = load;
  j["mutant"] = mutant.empty() ? nlohmann::json(nullptr) : nlohmann::json(mutant);
  j["seed"] = seed;
  j["world_size"] = worldSize;
  j["wrapper"] = wrapper;
  j["fsdp_experts"] = fsdpExperts;
  j["device"] = device;
  j["memory"] = memory;
  j["measured_memory"] = measuredMemory;
  j["steps"] = nlohmann::json::array();
  for (const auto& s : steps)
    j["steps"].push_back({{"step", s.run.step},
                          {"loss", s.run.loss}, {"reference_loss", s.reference.loss},
                          {"ce", s.run.ce}, {"reference_ce", s.reference.ce},
                          {"aux", s.run.aux}, {"reference_aux", s.reference.aux},
                          {"grad_norm", s.run.gradNorm}, {"reference_grad_norm", s.reference.gradNorm}});
  j["checks"] = nlohmann::json::array();
  for (const auto& c : checks)
    j["checks"].push_back(
        {{"check", c.check}, {"passed", c.passed}, {"explanation", c.explanation}, {"measured", c.measured}});
  j["step1_collectives_rank0"] = step1Collectives;
  j["passed"] = passed;
  j["environment"] = environment;
  j["timings"] = timings.toJson();
  return j;
}

nlohmann::json RunTimings::toJson() const {
  return {{"reference_seconds", referenceSeconds},
          {"reference_from_cache", referenceFromCache},
          {"step_seconds", stepSeconds},
          {"total_seconds", totalSeconds}};
}

namespace {
// A number field: a JSON number or "nan" / "inf" / "-inf" (json_number.h).
double requiredNumber(const nlohmann::json& j, const char* key, const std::string& where) {
  if (!j.is_object() || !j.contains(key)) fail("run result: ", where, " has no \"", key, "\"");
  try {
    return numberOf(j.at(key), key);
  } catch (const HarnessError& e) {
    fail("run result: ", where, " \"", key, "\": ", e.what());
  }
}
double optionalNumber(const nlohmann::json& j, const char* key, const std::string& where) {
  try {
    return numberOr(j, key, 0.0);
  } catch (const HarnessError& e) {
    fail("run result: ", where, " \"", key, "\": ", e.what());
  }
}

template <typename T>
T required(const nlohmann::json& j, const char* key, const std::string& where) {
  if (!j.is_object() || !j.contains(key)) fail("run result: ", where, " has no \"", key, "\"");
  try {
    return j.at(key).get<T>();
  } catch (const nlohmann::json::exception& e) {
    fail("run result: ", where, " \"", key, "\": ", e.what());
  }
}
}  // namespace

RunResult RunResult::fromJson(const nlohmann::json& j) {
  if (!j.is_object()) fail("run result: not a JSON object");
  RunResult r;
  r.config = j.value("config", "");
  r.mesh = j.value("mesh", "");
  r.plan = j.value("plan", "");
  r.dtype = j.value("dtype", "");
  r.load = j.value("load", "");
  if (j.contains("mutant") && j["mutant"].is_string()) r.mutant = j["mutant"].get<std::string>();
  r.seed = j.value("seed", uint64_t{0});
  r.worldSize = j.value("world_size", 0);
  r.wrapper = j.value("wrapper", "");
  r.fsdpExperts = j.value("fsdp_experts", "");
  r.device = j.value("device", "");
  r.memory = j.value("memory", nlohmann::json::object());
  r.measuredMemory = j.value("measured_memory", nlohmann::json::object());
  for (const auto& s : j.value("steps", nlohmann::json::array())) {
    StepComparison c;
    c.run.step = c.reference.step = required<int64_t>(s, "step", "a step");
    const std::string where = moe::str("step ", c.run.step);
    c.run.loss = requiredNumber(s, "loss", where);
    c.reference.loss = requiredNumber(s, "reference_loss", where);
    c.run.ce = optionalNumber(s, "ce", where);
    c.reference.ce = optionalNumber(s, "reference_ce", where);
    c.run.aux = optionalNumber(s, "aux", where);
    c.reference.aux = optionalNumber(s, "reference_aux", where);
    c.run.gradNorm = optionalNumber(s, "grad_norm", where);
    c.reference.gradNorm = optionalNumber(s, "reference_grad_norm", where);
    r.steps.push_back(c);
  }
  for (const auto& c : j.value("checks", nlohmann::json::array())) {
    checks::CheckResult x;
    x.check = required<std::string>(c, "check", "a check");
    x.passed = required<bool>(c, "passed", "check " + x.check);
    x.explanation = c.value("explanation", "");
    x.measured = c.value("measured", nlohmann::json::object());
    r.checks.push_back(x);
  }
  r.step1Collectives = j.value("step1_collectives_rank0", nlohmann::json::array());
  r.passed = j.value("passed", false);
  r.environment = j.value("environment", nlohmann::json::object());
  const auto t = j.value("timings", nlohmann::json::object());
  r.timings.referenceSeconds = optionalNumber(t, "reference_seconds", "timings");
  r.timings.referenceFromCache = t.value("reference_from_cache", false);
  r.timings.stepSeconds = t.value("step_seconds", std::vector<double>{});
  r.timings.totalSeconds = optionalNumber(t, "total_seconds", "timings");
  return r;
}

const checks::CheckResult* RunResult::check(const std::string& name) const {
  for (const auto& c : checks)
    if (c.check == name) return &c;
  return nullptr;
}

nlohmann::json environmentJson(const std::string& backend, const std::string& gitRevision) {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  return {{"torch_version", TORCH_VERSION}, {"backend", backend}, {"git_revision", gitRevision}, {"host", host}};
}

}  // namespace moe::conformance
