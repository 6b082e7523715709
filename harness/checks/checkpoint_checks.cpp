// checkpoint_complete and resume_parity (checkpoint_checks.h).
#include "harness/checks/checkpoint_checks.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "common/error.h"
#include "common/registry.h"
#include "harness/checks/check_common.h"
#include "harness/checks/check_registry.h"
#include "harness/checks/parity_check.h"
#include "reference/io/dist_checkpoint.h"
#include "reference/parallel/hf_checkpoint.h"
#include "reference/train/hub_naming.h"
#include "reference/placement/dist_tensor.h"

namespace moe::checks {

namespace {

// The journal's order: the first COMPLETE line must follow every rank
// file's line and metadata.json's.
std::string journalProblem(const std::string& dir, int worldSize) {
  std::ifstream in(dir + "/" + io::kDistJournalFile);
  if (!in) return moe::str(dir, ": no ", io::kDistJournalFile, " (the order of the save cannot be verified)");
  std::vector<std::string> files;
  std::string line;
  while (std::getline(in, line)) {
    const auto sp = line.rfind(' ');
    files.push_back(sp == std::string::npos ? line : line.substr(sp + 1));
  }
  const auto complete = std::find(files.begin(), files.end(), io::kDistCompleteFile);
  if (complete == files.end()) return moe::str(dir, ": the journal never records ", io::kDistCompleteFile);
  std::vector<std::string> needed;
  for (int r = 0; r < worldSize; ++r) needed.push_back(io::rankFileName(r));
  needed.push_back(io::kDistMetadataFile);
  for (const auto& f : needed) {
    const auto at = std::find(files.begin(), files.end(), f);
    if (at == files.end()) return moe::str(dir, ": the journal never records ", f);
    if (at > complete)
      return moe::str(dir, ": ", io::kDistCompleteFile, " was written before ", f, " (journal line ",
                      complete - files.begin() + 1, " vs ", at - files.begin() + 1,
                      "): a save interrupted there would look complete");
  }
  return "";
}

}  // namespace

std::string checkpointProblem(const std::string& dir, const std::vector<std::string>& expectedTensors,
                              const std::vector<std::string>& expertTensors, nlohmann::json& measured) {
  if (!io::isDistCheckpoint(dir)) return moe::str(dir, ": no ", io::kDistCompleteFile, " marker");
  std::unique_ptr<io::DistCheckpointSource> src;
  try {
    src = std::make_unique<io::DistCheckpointSource>(dir, io::DistReadOptions{/*verifyHashes=*/false});
  } catch (const HarnessError& e) {
    return e.what();
  }
  const auto& meta = src->meta();
  const int worldSize = meta.info.value("world_size", 0);
  int64_t pieces = 0, bytes = 0;
  std::map<std::string, std::string> keyFile;  // piece key -> rank file
  std::string problem, duplicate;  // a duplicate key is reported after the coverage it breaks
  auto note = [&](const std::string& p) {
    if (problem.empty()) problem = p;
  };
  std::set<std::string> want(expectedTensors.begin(), expectedTensors.end());
  for (const auto& name : want)
    if (!meta.tensors.count(name)) note(moe::str(dir, ": tensor '", name, "' is not in the checkpoint"));
  for (const auto& [name, t] : meta.tensors) {
    if (!want.count(name)) note(moe::str(dir, ": tensor '", name, "' is in the checkpoint but the run has no such state"));
    for (const auto& p : t.pieces) {
      ++pieces;
      int64_t n = 1;
      for (auto l : p.lengths) n *= l;
      bytes += n * static_cast<int64_t>(c10::elementSize(src->scalarType(name)));
      auto [it, fresh] = keyFile.emplace(p.key, p.file);
      if (!fresh && duplicate.empty())
        duplicate = moe::str(dir, ": piece key ", p.key, " is written by ", it->second, " and ", p.file);
    }
    const bool expert = std::find(expertTensors.begin(), expertTensors.end(), name) != expertTensors.end();
    const std::string cov = io::coverageProblem(name, t);
    if (!cov.empty()) {
      if (expert && !t.shape.empty()) {
        // Name the experts whose rows are missing or written twice.
        std::vector<int64_t> counts(static_cast<size_t>(t.shape[0]), 0);
        int64_t rest = 1;
        for (size_t d = 1; d < t.shape.size(); ++d) rest *= t.shape[d];
        for (const auto& p : t.pieces) {
          int64_t inner = 1;
          for (size_t d = 1; d < p.lengths.size(); ++d) inner *= p.lengths[d];
          for (int64_t e = p.offsets[0]; e < p.offsets[0] + p.lengths[0] && e < t.shape[0]; ++e)
            counts[static_cast<size_t>(e)] += inner;
        }
        std::vector<int64_t> twice, missing;
        for (size_t e = 0; e < counts.size(); ++e) {
          if (counts[e] > rest) twice.push_back(static_cast<int64_t>(e));
          if (counts[e] < rest) missing.push_back(static_cast<int64_t>(e));
        }
        note(moe::str(dir, ": expert keys of '", name, "' are not unique and complete: ",
                      twice.empty() ? std::string() : formatCounted("expert", twice) + " written more than once",
                      !twice.empty() && !missing.empty() ? ", " : "",
                      missing.empty() ? std::string() : formatCounted("expert", missing) + " missing", " (", cov,
                      ")"));
      } else {
        note(moe::str(dir, ": ", cov));
      }
    }
  }
  if (problem.empty()) problem = duplicate;
  if (problem.empty()) problem = src->verifyAllHashes();
  if (problem.empty()) problem = journalProblem(dir, worldSize);
  measured = {{"dir", dir}, {"tensors", meta.tensors.size()}, {"pieces", pieces}, {"bytes", bytes},
              {"world_size", worldSize}, {"step", meta.info.value("step", int64_t{-1})}};
  return problem;
}

CheckResult CheckpointCompleteCheck::run(const CheckContext& ctx) const {
  auto& world = *require(ctx.mesh, "checkpoint_complete", "mesh").world();
  std::string mine;
  nlohmann::json measured;
  if (world.rank() == 0) {  // the files are shared: one rank audits them
    try {
      if (!ctx.saveProblem.empty())
        mine = ctx.saveProblem;
      else if (parallel::isHfCheckpoint(ctx.savedCheckpoint))
        mine = hfCheckpointProblem(ctx.savedCheckpoint, ref::fusedViewOptions(require(ctx.config, "checkpoint_complete",
                                                                                      "model config")),
                                   ctx.savedTensors, measured);
      else
        mine = checkpointProblem(ctx.savedCheckpoint, ctx.savedTensors, ctx.savedExpertTensors, measured);
    } catch (const HarnessError& e) {
      mine = e.what();
    }
  }
  const Verdict v = agreeVerdict(world, mine);
  CheckResult r;
  r.check = name();
  r.passed = !v.failed;
  r.measured = measured;
  r.measured["save"] = ctx.saveStats;
  r.explanation = v.failed ? v.explanation
                 : parallel::isHfCheckpoint(ctx.savedCheckpoint)
                     ? moe::str(ctx.savedCheckpoint, ": consolidated layout, ", ctx.savedTensors.size(),
                                " tensors, every experts module complete and unique, hashes verified")
                     : moe::str(ctx.savedCheckpoint, ": ", ctx.savedTensors.size(),
                                " tensors complete, every element once, hashes and order verified");
  return r;
}

std::string hfCheckpointProblem(const std::string& dir, const io::FusedViewOptions& view,
                                const std::vector<std::string>& expectedTensors, nlohmann::json& measured) {
  std::unique_ptr<parallel::HfCheckpointSource> src;
  try {
    // Opening validates the expert keys: every experts module must hold
    // experts 0..E-1 once each, every projection, consistent shapes.
    src = std::make_unique<parallel::HfCheckpointSource>(dir, view);
  } catch (const HarnessError& e) {
    return e.what();
  }
  std::string problem;
  auto note = [&](const std::string& p) {
    if (problem.empty()) problem = p;
  };
  const auto names = src->names();
  const std::set<std::string> have(names.begin(), names.end());
  const std::set<std::string> want(expectedTensors.begin(), expectedTensors.end());
  for (const auto& name : want)
    if (!have.count(name)) note(moe::str(dir, ": tensor '", name, "' is not in the checkpoint"));
  for (const auto& name : have)
    if (!want.count(name)) note(moe::str(dir, ": tensor '", name, "' is in the checkpoint but the run has no such state"));
  if (problem.empty()) {
    const std::string h = src->verifyAllHashes();
    if (!h.empty()) note(moe::str(dir, ": ", h));
  }
  int64_t bytes = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec))
    if (e.is_regular_file()) bytes += static_cast<int64_t>(e.file_size());
  measured = {{"dir", dir}, {"layout", "hf"}, {"tensors", have.size()}, {"bytes", bytes},
              {"step", src->info().value("step", int64_t{-1})}};
  return problem;
}

std::string resumeParityProblem(const ResumeParityInputs& in, const ParityCheckOptions& options,
                                nlohmann::json& measured) {
  const ParityTolerance tol = options.resolved();
  std::string problem;
  auto note = [&](const std::string& p) {
    if (problem.empty()) problem = p;
  };
  const auto& run = require(in.runSteps, "resume_parity", "run step records");
  const auto& ref = require(in.referenceSteps, "resume_parity", "reference step records");
  double lossMax = 0;
  // Reported in this order: the loaded state (the resume's own effect),
  // then the losses, then the final parameters (consequences).
  std::string lossProblem;
  auto noteLoss = [&](const std::string& p) {
    if (lossProblem.empty()) lossProblem = p;
  };
  if (run.size() != ref.size())
    noteLoss(moe::str("rank ", in.rank, ": the resumed run has ", run.size(), " steps vs ", ref.size(),
                  " in the reference"));
  for (size_t i = 0; i < std::min(run.size(), ref.size()); ++i) {
    const double d = std::abs(run[i].loss - ref[i].loss);
    lossMax = std::max(lossMax, std::isnan(d) ? INFINITY : d);
    if (!(d <= tol.lossAbs))
      noteLoss(moe::str("rank ", in.rank, ": step ", ref[i].step, " (resumed at ", in.resumedFromStep, "): loss ",
                    formatNumber(run[i].loss), " vs uninterrupted reference ", formatNumber(ref[i].loss),
                    " (|diff| ", formatNumber(d), " > ", formatNumber(tol.lossAbs), ")"));
  }
  const AdamwAllowanceBasis basis = adamwAllowanceBasis(in.referenceGrads, in.referenceGradNorm, options.optimizer);
  auto compare = [&](const std::vector<ParamShard>& shards, const io::TensorSource& reference, const char* what,
                     int64_t allowanceSteps) {
    double maxAbs = 0;
    for (const auto& s : shards) {
      if (!reference.has(s.name)) {
        note(moe::str("rank ", in.rank, ": ", what, ": the reference has no '", s.name, "'"));
        continue;
      }
      const auto layout = ref::computeLayout(s.globalShape, s.placements, in.meshSizes, in.meshCoords);
      const auto expected = readLocalSlice(reference, s.name, layout);
      at::Tensor allowance;
      const bool isParam = s.name.find('/') == std::string::npos;  // moments are "optimizer.exp_avg/<name>"
      if (isParam && basis.grads && basis.grads->has(s.name))
        allowance = adamwAllowance(readLocalSlice(*basis.grads, s.name, layout), tol, options.optimizer,
                                   allowanceSteps, basis.clipFactor);
      const TensorDiff d = compareTensor(s.local, expected, tol, &layout, allowance.defined() ? &allowance : nullptr);
      maxAbs = std::max(maxAbs, d.maxAbsDiff);
      if (!d.ok) note(describeTensorFailure(in.rank, what, s.name, d, tol));
    }
    return maxAbs;
  };
  measured = {{"resumed_from_step", in.resumedFromStep}, {"steps", run.size()}, {"loss_max_abs_diff", lossMax}};
  if (in.resumedState)
    measured["loaded_state_max_abs_diff"] =
        compare(*in.resumedState, require(in.referenceStateAtResume, "resume_parity", "reference state"),
                "state loaded at the resume step", in.resumedFromStep);
  note(lossProblem);
  if (in.finalParams)
    measured["final_params_max_abs_diff"] =
        compare(*in.finalParams, require(in.referenceParams, "resume_parity", "reference parameters"),
                "final parameter", run.empty() ? in.resumedFromStep : run.back().step);
  measured["tolerance"] = tol.describe();
  return problem;
}

CheckResult ResumeParityCheck::run(const CheckContext& ctx) const {
  const auto& mesh = require(ctx.mesh, "resume_parity", "mesh");
  auto& world = *mesh.world();
  ResumeParityInputs in;
  in.rank = world.rank();
  in.meshSizes = ref::meshSizes(mesh);
  in.meshCoords = mesh.coords();
  in.resumedFromStep = ctx.resumedFromStep;
  in.resumedState = ctx.resumedState;
  in.referenceStateAtResume = ctx.referenceStateAtResume;
  in.runSteps = ctx.runSteps;
  in.referenceSteps = ctx.referenceSteps;
  in.finalParams = ctx.finalParams;
  in.referenceParams = ctx.referenceParams;
  // A resumed job's ctx.referenceGrads are its first step's (k+1); the
  // in-job round trip's are global step 1's.
  in.referenceGrads = ctx.referenceGlobalStep1Grads ? ctx.referenceGlobalStep1Grads : ctx.referenceGrads;
  in.referenceGradNorm = ctx.referenceGlobalStep1Grads ? ctx.referenceGlobalStep1GradNorm
                         : (ctx.referenceSteps && !ctx.referenceSteps->empty() ? ctx.referenceSteps->front().gradNorm : 0.0);
  nlohmann::json measured;
  std::string mine;
  try {
    mine = resumeParityProblem(in, ctx.parity, measured);
  } catch (const HarnessError& e) {
    mine = moe::str("rank ", in.rank, ": ", e.what());
  }
  const Verdict v = agreeVerdict(world, mine);
  CheckResult r;
  r.check = name();
  r.passed = !v.failed;
  const auto maxima = allReduceMax(world, {measured.value("loss_max_abs_diff", 0.0),
                                           measured.value("loaded_state_max_abs_diff", 0.0),
                                           measured.value("final_params_max_abs_diff", 0.0)});
  measured["loss_max_abs_diff"] = maxima[0];
  measured["loaded_state_max_abs_diff"] = maxima[1];
  measured["final_params_max_abs_diff"] = maxima[2];
  r.measured = measured;
  r.explanation = v.failed ? v.explanation
                           : moe::str("resumed at step ", ctx.resumedFromStep, ": loaded state, ",
                                      ctx.runSteps ? ctx.runSteps->size() : 0,
                                      " losses and final parameters match the uninterrupted reference (max |diff| "
                                      "loss ", formatNumber(maxima[0]), ", state ", formatNumber(maxima[1]),
                                      ", params ", formatNumber(maxima[2]), ")");
  return r;
}

MOE_REGISTER(Check, CheckpointCompleteCheck);
MOE_REGISTER(Check, ResumeParityCheck);

}  // namespace moe::checks
