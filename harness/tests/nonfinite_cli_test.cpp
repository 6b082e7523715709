// Non-finite values through the CLI binary (issue 17): a checkpoint with one
// NaN (lm_head.weight element 0) is a user error, exit 2, naming the tensor
// and index 0, for `reference` and for `run-plan` on ep=2 (and a case run);
// allowed explicitly, the run trains and the finite check fails it (exit 1)
// with a result JSON that reads back.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>

#include "harness/tests/run_command.h"
#include "harness/conformance/run_result.h"
#include "reference/io/safetensors.h"

// Named, so this file shares a unity build with exit_codes_test.cpp.
namespace nonfinite_cli {
namespace {
namespace fs = std::filesystem;

const std::string kHarness = MOE_HARNESS_BIN;
const std::string kSrc = MOE_SOURCE_DIR;
const std::string kConfig = kSrc + "/cases/configs/tiny_moe.json";

using moe::testing::has;
using moe::testing::Proc;
// `moe-harness ARGS`
Proc run(const std::string& args) { return moe::testing::runCommand(kHarness + " " + args); }

class NonFiniteCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("moe_nonfinite_" + std::to_string(getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "ckpt");
    // The shipped checkpoint with element 0 of lm_head.weight set to NaN.
    moe::io::SafetensorsReader in(kSrc + "/cases/checkpoints/tiny_moe_zero_router.safetensors");
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    for (const auto& name : in.names()) {
      at::Tensor t = in.read(name);
      if (name == "lm_head.weight") t.view({-1})[0] = std::numeric_limits<float>::quiet_NaN();
      tensors.emplace_back(name, t);
    }
    moe::io::writeSafetensors((dir_ / "ckpt" / "model.safetensors").string(), tensors);
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);
  }
  std::string runPlan(const std::string& extra) const {
    return "launch -n 2 --timeout 240 -- " + kHarness + " run-plan --config " + kConfig +
           " --mesh '{\"ep\":2}' --plan " + kSrc + "/cases/plans/ep.json --steps 2 --checkpoint " +
           (dir_ / "ckpt").string() + " " + extra;
  }
  fs::path dir_;
};

const std::string kNamed = "tensor 'lm_head.weight' holds non-finite values: index [0, 0] (flat 0) is nan; 1 of ";

TEST_F(NonFiniteCli, ReferenceRefusesANanCheckpoint) {
  const Proc p = run("reference --config " + kConfig + " --steps 1 --checkpoint " + (dir_ / "ckpt").string() +
                     " --out " + (dir_ / "ref").string());
  EXPECT_EQ(p.code, 2) << p.out;
  EXPECT_TRUE(has(p, "moe-harness: error: " + (dir_ / "ckpt" / "model.safetensors").string() + ": " + kNamed)) << p.out;
  EXPECT_FALSE(fs::exists(dir_ / "ref" / "losses.json"));
}

TEST_F(NonFiniteCli, ReferenceThatDivergesIsAUserErrorNamingStepAndTensor) {
  const Proc p = run("reference --config " + kConfig + " --steps 1 --allow-nonfinite-checkpoint --checkpoint " +
                     (dir_ / "ckpt").string() + " --out " + (dir_ / "ref").string());
  EXPECT_EQ(p.code, 2) << p.out;
  EXPECT_TRUE(has(p, "reference: training produced non-finite values (no reference written): step 1: loss is nan"))
      << p.out;
  EXPECT_TRUE(has(p, "step 1: gradient of ")) << p.out;
  EXPECT_FALSE(fs::exists(dir_ / "ref" / "losses.json"));
}

TEST_F(NonFiniteCli, RunPlanOnEp2RefusesANanCheckpointBeforeTraining) {
  const Proc p = run(runPlan(""));
  EXPECT_EQ(p.code, 2) << p.out;
  EXPECT_TRUE(has(p, kNamed)) << p.out;
  EXPECT_FALSE(has(p, "run-plan: step 1/")) << p.out;  // nothing trained
}

TEST_F(NonFiniteCli, RunPlanWithAnAllowedNanCheckpointFailsTheFiniteCheck) {
  const fs::path result = dir_ / "result.json";
  const Proc p = run(runPlan("--allow-nonfinite-checkpoint --result-json " + result.string()));
  EXPECT_EQ(p.code, 1) << p.out;  // a failed run, not an internal error
  EXPECT_FALSE(has(p, "internal error")) << p.out;
  std::ifstream in(result);
  ASSERT_TRUE(in) << p.out;
  nlohmann::json j;
  in >> j;
  const auto r = moe::conformance::RunResult::fromJson(j);
  const auto* finite = r.check("finite");
  ASSERT_NE(finite, nullptr) << j.dump(1);
  EXPECT_FALSE(finite->passed);
  EXPECT_NE(finite->explanation.find("rank 0: step 1: loss is nan"), std::string::npos) << finite->explanation;
  EXPECT_NE(finite->explanation.find("step 1: gradient of "), std::string::npos) << finite->explanation;
  EXPECT_NE(finite->explanation.find("local index ["), std::string::npos) << finite->explanation;
  EXPECT_TRUE(std::isnan(r.steps.at(0).run.loss));
  EXPECT_EQ(j["steps"][0]["loss"], "nan");
  const auto* parity = r.check("parity");
  ASSERT_NE(parity, nullptr);
  EXPECT_FALSE(parity->passed);  // NaN vs the reference's NaN is never equal
}

TEST_F(NonFiniteCli, CaseRunRefusesANanCheckpointUnlessTheCaseAllowsIt) {
  const std::string base = R"({"name": "nan_ckpt", "model": ")" + kConfig +
                           R"(", "world_size": 2, "mesh": {"ep": 2}, "plan": ")" + kSrc + R"(/cases/plans/ep.json", "dtypes": ["fp32"], "steps": 1,
    "checkpoint": ")" + (dir_ / "ckpt").string() +
                           R"(", "tolerances": {"fp32": {"loss_abs": 1e-5, "rtol": 1e-4, "atol": 1e-6}})";
  std::ofstream(dir_ / "nan_ckpt.json") << base << "}";
  std::ofstream(dir_ / "nan_ckpt_allowed.json") << base << R"(, "allow_nonfinite_checkpoint": true})";
  EXPECT_EQ(run("validate " + (dir_ / "nan_ckpt_allowed.json").string()).code, 0);
  const Proc p = run("run " + (dir_ / "nan_ckpt.json").string() + " --report " + (dir_ / "report").string());
  EXPECT_EQ(p.code, 1) << p.out;
  std::ifstream in(dir_ / "report" / "report.json");
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_NE(ss.str().find("lm_head.weight' holds non-finite values: index [0, 0] (flat 0) is nan"), std::string::npos)
      << ss.str();
}

}  // namespace
}  // namespace nonfinite_cli
