#include "reports/report.h"

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "common/json_number.h"

namespace moe::reports {

std::string statusName(Status s) {
  switch (s) {
    case Status::kPass: return "pass";
    case Status::kFail: return "fail";
    case Status::kError: return "error";
    case Status::kSkip: return "skip";
  }
  return "error";
}

Status parseStatus(const std::string& s) {
  if (s == "pass") return Status::kPass;
  if (s == "fail") return Status::kFail;
  if (s == "error") return Status::kError;
  if (s == "skip") return Status::kSkip;
  fail("unknown run status '", s, "' (pass, fail, error, skip)");
}

Totals Report::totals() const {
  Totals t;
  for (const auto& r : runs) {
    switch (r.status) {
      case Status::kPass: ++t.pass; break;
      case Status::kFail: ++t.fail; break;
      case Status::kError: ++t.error; break;
      case Status::kSkip: ++t.skip; break;
    }
  }
  return t;
}

nlohmann::json toJson(const RunResult& r) {
  nlohmann::json steps = nlohmann::json::array();
  for (const auto& s : r.steps)
    steps.push_back({{"step", s.step}, {"loss", s.loss}, {"reference_loss", s.referenceLoss},
                     {"ce", s.ce}, {"reference_ce", s.referenceCe}, {"aux", s.aux},
                     {"reference_aux", s.referenceAux}, {"grad_norm", s.gradNorm},
                     {"reference_grad_norm", s.referenceGradNorm}});
  nlohmann::json checks = nlohmann::json::array();
  for (const auto& c : r.checks)
    checks.push_back({{"check", c.check}, {"passed", c.passed}, {"requested", c.requested},
                      {"explanation", c.explanation}, {"measured", c.measured}});
  nlohmann::json m = nlohmann::json::object();
  for (const auto& [k, v] : margins(r)) m[k] = v;
  nlohmann::json j = {{"id", r.id},
                      {"case", r.caseName},
                      {"case_file", r.caseFile},
                      {"status", statusName(r.status)},
                      {"reason", r.reason},
                      {"spec", r.spec},
                      {"steps", steps},
                      {"loss_tolerance", r.lossTolerance},
                      {"checks", checks},
                      {"margins", m},
                      {"collectives_step1_rank0", r.collectives},
                      {"timings", r.timings},
                      {"measured_memory", r.measuredMemory},
                      {"seconds", r.seconds},
                      {"environment", r.environment},
                      {"log", r.log},
                      {"flight_recorder", r.flightRecorder}};
  // Only a job that failed has an attribution.
  if (!r.failure.empty()) j["failure"] = r.failure;
  return j;
}

nlohmann::json toJson(const Report& r) {
  const Totals t = r.totals();
  nlohmann::json runs = nlohmann::json::array();
  for (const auto& x : r.runs) runs.push_back(toJson(x));
  return {{"format", "moe-harness-report/1"},
          {"created", r.created},
          {"environment", r.environment},
          {"suite", r.suite},
          {"seconds", r.seconds},
          {"totals", {{"pass", t.pass}, {"fail", t.fail}, {"error", t.error}, {"skip", t.skip}, {"total", t.total()}}},
          {"runs", runs}};
}

RunResult runResultFromJson(const nlohmann::json& j) {
  RunResult r;
  r.id = j.at("id").get<std::string>();
  r.caseName = j.value("case", "");
  r.caseFile = j.value("case_file", "");
  r.status = parseStatus(j.at("status").get<std::string>());
  r.reason = j.value("reason", "");
  r.spec = j.value("spec", nlohmann::json::object());
  for (const auto& s : j.value("steps", nlohmann::json::array()))
    // Non-finite numbers are "nan" / "inf" / "-inf" (common/json_number.h).
    r.steps.push_back({s.at("step").get<int>(), numberOr(s, "loss", 0.0), numberOr(s, "reference_loss", 0.0),
                       numberOr(s, "ce", 0.0), numberOr(s, "reference_ce", 0.0), numberOr(s, "aux", 0.0),
                       numberOr(s, "reference_aux", 0.0), numberOr(s, "grad_norm", 0.0),
                       numberOr(s, "reference_grad_norm", 0.0)});
  r.lossTolerance = numberOr(j, "loss_tolerance", 0.0);
  for (const auto& c : j.value("checks", nlohmann::json::array()))
    r.checks.push_back({c.at("check").get<std::string>(), c.value("passed", false), c.value("requested", true),
                        c.value("explanation", ""), c.value("measured", nlohmann::json::object())});
  r.collectives = j.value("collectives_step1_rank0", nlohmann::json::array());
  r.timings = j.value("timings", nlohmann::json::object());
  r.measuredMemory = j.value("measured_memory", nlohmann::json::object());
  r.seconds = j.value("seconds", 0.0);
  r.environment = j.value("environment", nlohmann::json::object());
  r.log = j.value("log", "");
  r.flightRecorder = j.value("flight_recorder", "");
  r.failure = j.value("failure", nlohmann::json::object());
  return r;
}

Report reportFromJson(const nlohmann::json& j) {
  Report r;
  r.created = j.value("created", "");
  r.environment = j.value("environment", nlohmann::json::object());
  r.suite = j.value("suite", nlohmann::json::object());
  r.seconds = j.value("seconds", 0.0);
  for (const auto& x : j.at("runs")) r.runs.push_back(runResultFromJson(x));
  return r;
}

Report readReport(const std::string& path) {
  std::string file = path;
  if (std::filesystem::is_directory(file)) file += "/report.json";
  std::ifstream in(file);
  if (!in) fail("cannot read report ", file);
  try {
    nlohmann::json j;
    in >> j;
    return reportFromJson(j);
  } catch (const nlohmann::json::exception& e) {
    fail("report ", file, ": ", e.what());
  }
}

std::string environmentText(const nlohmann::json& env) {
  auto field = [&](const char* k) -> std::string {
    if (!env.is_object() || !env.contains(k)) return "";
    const auto& v = env[k];
    if (v.is_string()) return v.get<std::string>();
    if (v.is_array()) {
      std::string out;
      for (const auto& x : v) out += (out.empty() ? "" : " + ") + (x.is_string() ? x.get<std::string>() : x.dump());
      return out;
    }
    return v.dump();
  };
  std::vector<std::string> parts;
  auto add = [&](const std::string& label, const char* k, const std::string& suffix = "") {
    const std::string v = field(k);
    if (!v.empty()) parts.push_back(label + v + suffix);
  };
  std::string torch = "libtorch " + (field("torch_version").empty() ? "?" : field("torch_version"));
  if (!field("cuda").empty()) torch += " (CUDA " + field("cuda") + ")";
  parts.push_back(torch);
  add("NCCL ", "nccl");
  add("CUDA driver ", "cuda_driver");
  add("GPUs ", "gpus");
  add("", "compiler");
  add("", "build_type");
  add("backend ", "backend");
  add("git ", "git_revision");
  add("host ", "host");
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : ", ") + p;
  return out;
}

std::map<std::string, double> margins(const RunResult& r) {
  std::map<std::string, double> out;
  for (const auto& c : r.checks) {
    if (c.check != "parity" || !c.measured.is_object()) continue;
    const auto& m = c.measured;
    const double lossAbs = m.contains("tolerance") ? m["tolerance"].value("loss_abs", 0.0) : 0.0;
    if (lossAbs > 0 && m.contains("loss_max_abs_diff"))
      out["loss"] = numberOf(m["loss_max_abs_diff"], "loss_max_abs_diff") / lossAbs;
    for (const char* what : {"grads", "params"})
      if (m.contains(what) && m[what].contains("worst") && m[what]["worst"].contains("score"))
        out[what] = numberOf(m[what]["worst"]["score"], "score");
  }
  return out;
}

MeasuredMemorySummary measuredMemory(const RunResult& r) {
  MeasuredMemorySummary out;
  const auto& m = r.measuredMemory;
  if (!m.is_object() || !m.contains("per_rank")) return out;
  for (const auto& p : m["per_rank"]) {
    out.peakBytes.push_back(p.value("peak_bytes", 0.0));
    out.afterLastBytes.push_back(p.value("after_last_step_bytes", 0.0));
  }
  out.measuredRatio = m.value("measured_ratio", 0.0);
  out.declaredRatio = m.value("declared_ratio", 0.0);
  out.peakRatio = m.value("peak_ratio", 0.0);
  return out;
}

const std::vector<std::string>& phaseNames() {
  static const std::vector<std::string> names = {"spawn",  "rendezvous", "load",   "reference",
                                                 "steps",  "checks",     "report", "other"};
  return names;
}

PhaseTotals phaseTotals(const Report& report) {
  PhaseTotals t;
  std::map<std::string, double> sums;
  for (const auto& r : report.runs) {
    const auto it = r.timings.find("phases");
    if (it == r.timings.end() || !it->is_object() || it->empty()) continue;
    ++t.runs;
    for (const auto& kv : it->items())
      if (kv.value().is_number()) sums[kv.key()] += kv.value().get<double>();
  }
  for (const auto& name : phaseNames())
    if (sums.count(name)) t.seconds.emplace_back(name, sums[name]);
  return t;
}

std::string phaseText(const RunResult& r) {
  const auto it = r.timings.find("phases");
  if (it == r.timings.end() || !it->is_object()) return "";
  std::string out;
  for (const auto& name : phaseNames()) {
    const auto v = it->find(name);
    if (v == it->end() || !v->is_number()) continue;
    char buf[32];  // two decimals: phases of a tiny run are tenths of a second
    std::snprintf(buf, sizeof buf, "%.2f s", v->get<double>());
    out += (out.empty() ? "" : ", ") + name + " " + buf;
  }
  return out;
}

}  // namespace moe::reports
