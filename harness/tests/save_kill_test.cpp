// A rank killed while saving (issue 19, "Faults and bad input"): real gloo
// ranks through the CLI, tiny_moe, ep=2. The save path's test-only hook
// (MOE_HARNESS_TEST_KILL_IN_SAVE, reference/io/dist_checkpoint.cpp) makes one rank SIGKILL
// itself in the middle of writing its checkpoint pieces. Then:
//  - the job fails naming that rank and the signal;
//  - the directory is refused by --resume (no COMPLETE), the error naming
//    the missing rank file or metadata.json;
//  - no file under a final name is half-written: every rank file present
//    reads back whole and each piece matches the hash recorded beside it;
//    the killed rank's bytes are only under a temporary name;
//  - killed while saving OVER a complete checkpoint, what is left is not
//    accepted either (the old COMPLETE is gone before any rank writes).
// Without the variable the same jobs pass (the baselines).
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "harness/tests/run_command.h"
#include "reference/io/dist_checkpoint.h"
#include "reference/io/safetensors.h"
#include "reference/io/tests/test_util.h"

namespace {
namespace fs = std::filesystem;
using moe::testing::has;
using moe::testing::Proc;
using moe::testing::runCommand;

const std::string kHarness = MOE_HARNESS_BIN;
const std::string kSrc = MOE_SOURCE_DIR;
// "<rank>:tmp" or "<rank>:renamed" (reference/io/dist_checkpoint.cpp).
constexpr const char* kKillEnv = "MOE_HARNESS_TEST_KILL_IN_SAVE";

using TempDir = moe::io::testing::TempDir;

// A 2-rank ep=2 run of `steps` steps; `env` prefixes the command.
std::string job(const std::string& env, int steps, const std::string& extra) {
  return env + " " + kHarness + " launch -n 2 --timeout 240 -- " + kHarness + " run-plan --config " + kSrc +
         "/cases/configs/tiny_moe.json --mesh '{\"ep\":2}' --plan " + kSrc + "/cases/plans/ep.json --steps " +
         std::to_string(steps) + " " + extra;
}

Proc saveJob(const std::string& env, const std::string& dir, int saveAt) {
  return runCommand(job(env, saveAt, "--save " + dir + " --save-at " + std::to_string(saveAt)));
}

// A resume from `dir` fails: no COMPLETE, and the INTENT-based `detail`.
void expectResumeRefused(const std::string& dir, const std::string& detail) {
  auto r = runCommand(job("", 4, "--resume " + dir));
  EXPECT_NE(r.code, 0) << r.out;
  EXPECT_TRUE(has(r, "no COMPLETE marker: not a complete distributed checkpoint; " + detail)) << r.out;
}

std::string kill(int rank, const char* point) {
  return std::string(kKillEnv) + "=" + std::to_string(rank) + ":" + point;
}

// Every file in `dir` under a final name is whole: rank files read back
// completely and every piece matches the hash its own header records;
// INTENT and metadata.json (if present) parse. Returns the final-name rank
// files found; temporary files go to `temporaries`.
std::vector<std::string> checkNothingHalfWritten(const std::string& dir, std::vector<std::string>& temporaries) {
  std::vector<std::string> rankFiles;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.find(".tmp") != std::string::npos) {
      temporaries.push_back(name);
      continue;
    }
    if (name == moe::io::kDistIntentFile || name == moe::io::kDistMetadataFile) {
      std::ifstream in(e.path());
      EXPECT_NO_THROW(nlohmann::json::parse(in)) << name << " is not whole JSON";
      continue;
    }
    if (e.path().extension() != ".safetensors") continue;
    rankFiles.push_back(name);
    try {
      moe::io::SafetensorsReader reader(e.path().string());
      for (const auto& key : reader.names()) {
        const auto meta = nlohmann::json::parse(reader.metadata().at(key));
        EXPECT_EQ(moe::io::contentHash(reader.read(key)), meta.at("hash").get<std::string>())
            << name << ": piece " << key << " is not what was hashed";
      }
    } catch (const std::exception& ex) {
      ADD_FAILURE() << name << " under its final name is not whole: " << ex.what();
    }
  }
  return rankFiles;
}

TEST(SaveKill, RankKilledBeforeItsRenameLeavesNothingResumable) {
  TempDir t;
  const std::string dir = t.file("ck");
  auto s = saveJob(kill(1, "tmp"), dir, 2);
  // The job fails naming the killed rank: its own message, then the
  // launcher's verdict (rank 1 is the root cause, rank 0's error secondary).
  EXPECT_EQ(s.code, 128 + 9) << s.out;
  EXPECT_TRUE(has(s, "rank 1: " + std::string(kKillEnv) + "=1:tmp, killing myself")) << s.out;
  EXPECT_TRUE(has(s, "job failed: rank 1 killed by signal 9 (SIGKILL)")) << s.out;

  EXPECT_FALSE(fs::exists(dir + "/" + moe::io::kDistCompleteFile));
  EXPECT_FALSE(fs::exists(dir + "/" + moe::io::kDistMetadataFile));
  EXPECT_FALSE(fs::exists(dir + "/rank1.safetensors"));
  std::vector<std::string> temporaries;
  const auto rankFiles = checkNothingHalfWritten(dir, temporaries);
  // Rank 1's complete bytes exist, but only under a temporary name (rank 0
  // may have one too, when the launcher stopped it mid-write).
  EXPECT_NE(std::find(temporaries.begin(), temporaries.end(), "rank1.safetensors.tmp.kill"), temporaries.end())
      << ::testing::PrintToString(temporaries);
  for (const auto& f : rankFiles) EXPECT_EQ(f, "rank0.safetensors");

  expectResumeRefused(dir, "the save of step 2 by 2 ranks is incomplete: missing rank1.safetensors, missing metadata.json");
}

TEST(SaveKill, RankKilledAfterItsRenameOverACompleteCheckpointIsNotAccepted) {
  TempDir t;
  const std::string dir = t.file("ck");
  // Baseline: the same save without the variable completes and resumes.
  auto base = saveJob("", dir, 1);
  ASSERT_EQ(base.code, 0) << base.out;
  ASSERT_TRUE(fs::exists(dir + "/" + moe::io::kDistCompleteFile));
  // A later save into the same directory; rank 0 (the rank that would write
  // metadata.json and COMPLETE) dies after its rank file is in place.
  auto s = saveJob(kill(0, "renamed"), dir, 2);
  EXPECT_EQ(s.code, 128 + 9) << s.out;
  EXPECT_TRUE(has(s, "job failed: rank 0 killed by signal 9 (SIGKILL)")) << s.out;
  EXPECT_FALSE(fs::exists(dir + "/" + moe::io::kDistCompleteFile)) << "the step-1 marker survived a new save";
  EXPECT_FALSE(fs::exists(dir + "/" + moe::io::kDistMetadataFile));
  std::vector<std::string> temporaries;  // allowed: a rank stopped mid-write leaves only those
  const auto rankFiles = checkNothingHalfWritten(dir, temporaries);
  EXPECT_EQ(rankFiles.size(), 2u) << ::testing::PrintToString(rankFiles);

  // Both rank files exist (rank 1's of step 1 or 2): what is missing is
  // the metadata that only a finished save writes.
  expectResumeRefused(dir, "the save of step 2 by 2 ranks is incomplete: every rank file exists, missing metadata.json");
}

TEST(SaveKill, TheHookRefusesAMalformedValue) {
  TempDir t;
  auto s = saveJob(std::string(kKillEnv) + "=1:later", t.file("ck"), 1);
  EXPECT_NE(s.code, 0) << s.out;
  EXPECT_TRUE(has(s, std::string(kKillEnv) + "='1:later': expected <rank>:tmp or <rank>:renamed"))
      << s.out;
}

}  // namespace
