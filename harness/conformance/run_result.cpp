#include "harness/conformance/run_result.h"

#include <unistd.h>

#include <limits>
#include <type_traits>

#include "common/error.h"
#include "common/json_number.h"
#include "torch/version.h"
#include <ATen/Version.h>

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
  double steps = 0;
  for (double x : stepSeconds) steps += x;
  nlohmann::json phases = {{"rendezvous", rendezvousSeconds}, {"load", loadSeconds},
                           {"reference", referenceSeconds},   {"steps", steps},
                           {"checks", checksSeconds}};
  // Unknown is left out rather than written as null (docs/errors.md, non-finite JSON).
  if (spawnSeconds >= 0) phases["spawn"] = spawnSeconds;
  return {{"reference_seconds", referenceSeconds},
          {"reference_from_cache", referenceFromCache},
          {"step_seconds", stepSeconds},
          {"total_seconds", totalSeconds},
          {"phases", phases}};
}

namespace {
// Typed readers: a field of the wrong type is a user error naming the field
// (the document comes from another process or a file), never a
// nlohmann::json::type_error escaping to the reader (found by fuzz_run_result).
// What a field of type T must be, and whether `v` is one (integers: JSON
// integers in T's range; a float never converts, 1e30 would not fit).
// A number, or one of the strings json_number.h writes for a non-finite one.
bool isNumberLike(const nlohmann::json& v) {
  if (v.is_number()) return true;
  if (!v.is_string()) return false;
  const auto& t = v.get_ref<const std::string&>();
  return t == "nan" || t == "inf" || t == "-inf";
}
template <typename T>
const char* kindOf() {
  if constexpr (std::is_same_v<T, std::string>) return "a string";
  else if constexpr (std::is_same_v<T, bool>) return "a boolean";
  else if constexpr (std::is_same_v<T, double>) return "a number (or \"nan\", \"inf\", \"-inf\")";
  else if constexpr (std::is_same_v<T, std::vector<double>>) return "a list of numbers";
  else return "an integer in range";
}
template <typename T>
bool isKind(const nlohmann::json& v) {
  if constexpr (std::is_same_v<T, std::string>) return v.is_string();
  else if constexpr (std::is_same_v<T, bool>) return v.is_boolean();
  else if constexpr (std::is_same_v<T, double>) return isNumberLike(v);
  else if constexpr (std::is_same_v<T, std::vector<double>>) {
    if (!v.is_array()) return false;
    for (const auto& e : v)
      if (!isNumberLike(e)) return false;
    return true;
  } else if constexpr (std::is_unsigned_v<T>) {
    return v.is_number_unsigned() && v.get<uint64_t>() <= std::numeric_limits<T>::max();
  } else {
    if (v.is_number_unsigned()) return v.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<T>::max());
    return v.is_number_integer() && v.get<int64_t>() >= std::numeric_limits<T>::min() &&
           v.get<int64_t>() <= std::numeric_limits<T>::max();
  }
}
template <typename T>
T get(const nlohmann::json& v, const char* key, const std::string& where) {
  if (!isKind<T>(v)) {
    std::string text = v.dump();
    if (text.size() > 60) text = text.substr(0, 57) + "...";
    fail("run result: ", where, " \"", key, "\": expected ", kindOf<T>(), ", got ", v.type_name(), " ", text);
  }
  if constexpr (std::is_same_v<T, double>) {
    return numberOf(v, key);
  } else if constexpr (std::is_same_v<T, std::vector<double>>) {
    std::vector<double> out;
    for (const auto& e : v) out.push_back(numberOf(e, key));
    return out;
  } else {
    return v.get<T>();
  }
}
template <typename T>
T required(const nlohmann::json& j, const char* key, const std::string& where) {
  if (!j.is_object() || !j.contains(key)) fail("run result: ", where, " has no \"", key, "\"");
  return get<T>(j.at(key), key, where);
}
// j[key], or `otherwise` when it is absent or null.
template <typename T>
T optional(const nlohmann::json& j, const char* key, T otherwise, const std::string& where) {
  const auto it = j.find(key);
  if (it == j.end()) return otherwise;
  // A number field never holds null (json_number.h): a null there is named.
  if (it->is_null() && !std::is_same_v<T, double>) return otherwise;
  return get<T>(*it, key, where);
}
// j[key] of JSON type `type` (object or array), or an empty one when absent.
nlohmann::json container(const nlohmann::json& j, const char* key, nlohmann::json::value_t type,
                         const std::string& where) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return nlohmann::json(type);
  if (it->type() != type)
    fail("run result: ", where, " \"", key, "\": expected ", nlohmann::json(type).type_name(), ", got ",
         it->type_name(), " ", it->dump());
  return *it;
}
}  // namespace

RunResult RunResult::fromJson(const nlohmann::json& j) {
  using value_t = nlohmann::json::value_t;
  if (!j.is_object()) fail("run result: not a JSON object");
  const std::string doc = "the document";
  RunResult r;
  r.config = optional<std::string>(j, "config", "", doc);
  r.mesh = optional<std::string>(j, "mesh", "", doc);
  r.plan = optional<std::string>(j, "plan", "", doc);
  r.dtype = optional<std::string>(j, "dtype", "", doc);
  r.load = optional<std::string>(j, "load", "", doc);
  r.mutant = optional<std::string>(j, "mutant", "", doc);  // null when none
  r.seed = optional<uint64_t>(j, "seed", 0, doc);
  r.worldSize = optional<int>(j, "world_size", 0, doc);
  r.wrapper = optional<std::string>(j, "wrapper", "", doc);
  r.fsdpExperts = optional<std::string>(j, "fsdp_experts", "", doc);
  r.device = optional<std::string>(j, "device", "", doc);
  r.memory = j.value("memory", nlohmann::json::object());
  r.measuredMemory = j.value("measured_memory", nlohmann::json::object());
  for (const auto& s : container(j, "steps", value_t::array, doc)) {
    StepComparison c;
    c.run.step = c.reference.step = required<int64_t>(s, "step", "a step");
    const std::string where = moe::str("step ", c.run.step);
    c.run.loss = required<double>(s, "loss", where);
    c.reference.loss = required<double>(s, "reference_loss", where);
    c.run.ce = optional<double>(s, "ce", 0.0, where);
    c.reference.ce = optional<double>(s, "reference_ce", 0.0, where);
    c.run.aux = optional<double>(s, "aux", 0.0, where);
    c.reference.aux = optional<double>(s, "reference_aux", 0.0, where);
    c.run.gradNorm = optional<double>(s, "grad_norm", 0.0, where);
    c.reference.gradNorm = optional<double>(s, "reference_grad_norm", 0.0, where);
    r.steps.push_back(c);
  }
  for (const auto& c : container(j, "checks", value_t::array, doc)) {
    checks::CheckResult x;
    x.check = required<std::string>(c, "check", "a check");
    const std::string where = "check " + x.check;
    x.passed = required<bool>(c, "passed", where);
    x.explanation = optional<std::string>(c, "explanation", "", where);
    x.measured = c.value("measured", nlohmann::json::object());
    r.checks.push_back(x);
  }
  r.step1Collectives = j.value("step1_collectives_rank0", nlohmann::json::array());
  r.passed = optional<bool>(j, "passed", false, doc);
  r.environment = j.value("environment", nlohmann::json::object());
  const auto t = container(j, "timings", value_t::object, doc);
  r.timings.referenceSeconds = optional<double>(t, "reference_seconds", 0.0, "timings");
  r.timings.referenceFromCache = optional<bool>(t, "reference_from_cache", false, "timings");
  r.timings.stepSeconds = optional<std::vector<double>>(t, "step_seconds", {}, "timings");
  r.timings.totalSeconds = optional<double>(t, "total_seconds", 0.0, "timings");
  const auto phases = container(t, "phases", value_t::object, "timings");
  r.timings.spawnSeconds = optional<double>(phases, "spawn", -1.0, "timings.phases");
  r.timings.rendezvousSeconds = optional<double>(phases, "rendezvous", 0.0, "timings.phases");
  r.timings.loadSeconds = optional<double>(phases, "load", 0.0, "timings.phases");
  r.timings.checksSeconds = optional<double>(phases, "checks", 0.0, "timings.phases");
  return r;
}

const checks::CheckResult* RunResult::check(const std::string& name) const {
  for (const auto& c : checks)
    if (c.check == name) return &c;
  return nullptr;
}

namespace {

std::string compilerText() {
#if defined(__clang__)
  return std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  return std::string("gcc ") + __VERSION__;
#else
  return "unknown";
#endif
}

// The CUDA version libtorch was built with, as its build configuration
// (at::show_config(), Python's torch.__config__.show()) states it:
// "CUDA_VERSION=13.2"; "none" for a libtorch without CUDA.
std::string libtorchCudaVersion() {
  const std::string config = at::show_config();
  const std::string key = "CUDA_VERSION=";
  const auto at = config.find(key);
  if (at == std::string::npos) return "none";
  const auto end = config.find_first_of(", \n", at + key.size());
  const std::string v = config.substr(at + key.size(), end == std::string::npos ? std::string::npos : end - at - key.size());
  return v.empty() ? "none" : v;
}

}  // namespace

nlohmann::json environmentJson(const std::string& backend, const std::string& gitRevision) {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  nlohmann::json j = {{"torch_version", TORCH_VERSION},
                      {"backend", backend},
                      {"git_revision", gitRevision},
                      {"host", host},
                      {"compiler", compilerText()},
#ifdef MOE_BUILD_TYPE
                      {"build_type", MOE_BUILD_TYPE},
#else
                      {"build_type", "unknown"},
#endif
                      {"cuda", libtorchCudaVersion()}};
  j.update(cudaEnvironmentJson());
  return j;
}

#ifndef MOE_WITH_NCCL
nlohmann::json cudaEnvironmentJson() {
  return {{"nccl", "not compiled"}, {"cuda_driver", "not compiled"}, {"gpus", "not compiled"}};
}
#endif

}  // namespace moe::conformance
