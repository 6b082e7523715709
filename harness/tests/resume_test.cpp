// Save and resume end to end through the CLI (issue 19): real gloo ranks,
// tiny_moe, run-plan --save / --resume.
//  - fp32 on the same mesh, plan and wrapper: save at 2 + resume for 2 steps
//    is BITWISE the uninterrupted distributed 4-step run: the per-step
//    losses and the final parameters and AdamW moments (saved at step 4 by
//    both runs) are identical;
//  - resharding ep=2 -> tp=2 and fsdp=4 -> zero3=2 passes resume_parity;
//  - bad input: a config mismatch names both values, a checkpoint without
//    COMPLETE names the missing rank file.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "harness/tests/run_command.h"
#include "reference/io/dist_checkpoint.h"

namespace {
namespace fs = std::filesystem;
using moe::testing::has;
using moe::testing::runCommand;

const std::string kHarness = MOE_HARNESS_BIN;
const std::string kSrc = MOE_SOURCE_DIR;

struct Tmp {
  std::string path;
  Tmp() {
    std::string p = (fs::temp_directory_path() / "moe_resume_XXXXXX").string();
    path = ::mkdtemp(p.data());
  }
  ~Tmp() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

std::string runPlan(int n, const std::string& mesh, const std::string& plan, const std::string& extra,
                    const std::string& config = "tiny_moe.json") {
  return kHarness + " launch -n " + std::to_string(n) + " --timeout 240 -- " + kHarness + " run-plan --config " + kSrc +
         "/cases/configs/" + config + " --mesh '" + mesh + "' --plan " + kSrc + "/cases/plans/" + plan +
         ".json --steps 4 " + extra;
}

nlohmann::json readJson(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

nlohmann::json checkOf(const nlohmann::json& result, const std::string& name) {
  for (const auto& c : result["checks"])
    if (c["check"] == name) return c;
  return nullptr;
}

TEST(Resume, SameMeshFp32IsBitwiseTheUninterruptedRun) {
  Tmp t;
  // Uninterrupted 4 steps, saving its final state.
  auto a = runCommand(runPlan(2, R"({"ep":2})", "ep", "--save " + t.path + "/a --save-at 4 --result-json " + t.path +
                                                       "/a.json"));
  ASSERT_EQ(a.code, 0) << a.out;
  // Saved at 2, then resumed for steps 3-4, saving its final state.
  auto b = runCommand(runPlan(2, R"({"ep":2})", "ep", "--save " + t.path + "/b --save-at 2"));
  ASSERT_EQ(b.code, 0) << b.out;
  auto c = runCommand(runPlan(2, R"({"ep":2})", "ep", "--resume " + t.path + "/b --save " + t.path +
                                                       "/c --save-at 4 --result-json " + t.path + "/c.json"));
  ASSERT_EQ(c.code, 0) << c.out;
  const auto ra = readJson(t.path + "/a.json"), rc = readJson(t.path + "/c.json");
  ASSERT_EQ(ra["steps"].size(), 4u);
  ASSERT_EQ(rc["steps"].size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(rc["steps"][i]["step"], ra["steps"][i + 2]["step"]);
    EXPECT_EQ(rc["steps"][i]["loss"].get<double>(), ra["steps"][i + 2]["loss"].get<double>()) << i;
    EXPECT_EQ(rc["steps"][i]["grad_norm"].get<double>(), ra["steps"][i + 2]["grad_norm"].get<double>());
  }
  EXPECT_TRUE(checkOf(rc, "resume_parity")["passed"].get<bool>()) << rc.dump();
  EXPECT_TRUE(checkOf(ra, "checkpoint_complete")["passed"].get<bool>()) << ra.dump();
  moe::io::DistCheckpointSource fa(t.path + "/a"), fc(t.path + "/c");
  ASSERT_EQ(fa.names(), fc.names());
  for (const auto& n : fa.names()) EXPECT_TRUE(fa.read(n).equal(fc.read(n))) << n;  // params and moments
}

TEST(Resume, ReshardsAcrossPlansAndWrappers) {
  Tmp t;
  auto s = runCommand(runPlan(2, R"({"ep":2})", "ep", "--save " + t.path + "/ep2 --save-at 2"));
  ASSERT_EQ(s.code, 0) << s.out;
  auto r = runCommand(runPlan(2, R"({"tp":2})", "moe_tp", "--resume " + t.path + "/ep2 --result-json " + t.path + "/r.json"));
  EXPECT_EQ(r.code, 0) << r.out;
  auto f = runCommand(runPlan(4, R"({"dp":4})", "replicated", "--wrapper fsdp --save " + t.path + "/fsdp4 --save-at 2"));
  ASSERT_EQ(f.code, 0) << f.out;
  auto z = runCommand(runPlan(2, R"({"dp":2})", "replicated", "--wrapper zero3 --resume " + t.path + "/fsdp4"));
  EXPECT_EQ(z.code, 0) << z.out;
  EXPECT_TRUE(has(z, "\"resume_parity\"")) << z.out;
}

TEST(Resume, BadCheckpointsAreRefusedNamingTheProblem) {
  Tmp t;
  auto s = runCommand(runPlan(2, R"({"ep":2})", "ep", "--save " + t.path + "/ck --save-at 2"));
  ASSERT_EQ(s.code, 0) << s.out;
  // Another seed: the data position and the init differ.
  auto seed = runCommand(runPlan(2, R"({"ep":2})", "ep", "--seed 5 --resume " + t.path + "/ck"));
  EXPECT_NE(seed.code, 0);
  EXPECT_TRUE(has(seed, "seed is 0 in the checkpoint, 5 in this run")) << seed.out;
  // A lost rank file and no marker: refused, naming it.
  fs::remove(t.path + "/ck/COMPLETE");
  fs::remove(t.path + "/ck/rank1.safetensors");
  auto lost = runCommand(runPlan(2, R"({"ep":2})", "ep", "--resume " + t.path + "/ck"));
  EXPECT_NE(lost.code, 0);
  EXPECT_TRUE(has(lost, "no COMPLETE marker")) << lost.out;
  EXPECT_TRUE(has(lost, "missing rank1.safetensors")) << lost.out;
}

// The issue-19 mutants, each killed by its intended check (the same jobs
// the mutation suite runs; the baseline of each passes).
struct MutantCase {
  const char* mutant;
  int n;
  const char* mesh;
  const char* plan;
  const char* extra;
  const char* check;
  const char* message;
};

TEST(Resume, MutantsAreKilledByTheirIntendedCheck) {
  Tmp t;
  const MutantCase cases[] = {
      {"experts_saved_local_index", 2, R"({"ep":2})", "ep", "", "checkpoint_complete",
       "experts 0-3 written more than once, experts 4-7 missing"},
      {"complete_marker_first", 2, R"({"ep":2})", "ep", "", "checkpoint_complete", "COMPLETE was written before"},
      {"strided_ignored_on_reshard", 2, R"({"tp":2})", "moe_tp", "--resume-roundtrip", "resume_parity",
       "state loaded at the resume step of model.layers."},
      {"moments_not_resharded", 2, R"({"ep":2})", "ep", "--resume-roundtrip", "resume_parity",
       // rank 0's moments are right (its own box is at offset 0): rank 1's
       // wrong expert moments show first in the losses rank 0 reports.
       "(resumed at 1): loss"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.mutant);
    const std::string args = std::string("--save ") + t.path + "/" + c.mutant + " --save-at 1 " + c.extra +
                             " --result-json " + t.path + "/" + c.mutant + ".json";
    auto base = runCommand(runPlan(c.n, c.mesh, c.plan, args));
    EXPECT_EQ(base.code, 0) << base.out;
    auto bad = runCommand(runPlan(c.n, c.mesh, c.plan, args + " --mutant " + c.mutant));
    EXPECT_EQ(bad.code, 1) << bad.out;
    const auto r = readJson(t.path + "/" + c.mutant + ".json");
    const auto check = checkOf(r, c.check);
    ASSERT_FALSE(check.is_null()) << r.dump();
    EXPECT_FALSE(check["passed"].get<bool>()) << check.dump();
    EXPECT_NE(check["explanation"].get<std::string>().find(c.message), std::string::npos) << check.dump();
  }
}

}  // namespace
