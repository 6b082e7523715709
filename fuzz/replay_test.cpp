// Replays every file of fuzz/corpus/<target>/ and fuzz/regressions/<target>/
// through its target (fuzz/targets.h) in the normal build: a regression (an
// input that once crashed a parser or escaped as an internal error) stays
// fixed even where clang's libFuzzer is not built. One gtest per target; a
// failure names the file and the exception.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "common/error.h"
#include "fuzz/targets.h"

namespace {
namespace fs = std::filesystem;

std::vector<fs::path> inputsOf(const std::string& target) {
  std::vector<fs::path> files;
  for (const char* kind : {"corpus", "regressions"}) {
    const fs::path dir = fs::path(MOE_FUZZ_DIR) / kind / target;
    if (!fs::is_directory(dir)) continue;
    for (const auto& e : fs::directory_iterator(dir))
      if (e.is_regular_file()) files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

void replay(const std::string& target, void (*fn)(const uint8_t*, size_t)) {
  const auto files = inputsOf(target);
  ASSERT_FALSE(files.empty()) << "no inputs for " << target << " under " << MOE_FUZZ_DIR;
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    try {
      fn(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    } catch (const std::exception& e) {
      ADD_FAILURE() << f.string() << ": " << e.what();
    }
  }
}

TEST(FuzzReplay, SafetensorsHeader) { replay("safetensors_header", moe::fuzz::safetensorsHeader); }
TEST(FuzzReplay, CaseFile) { replay("case_file", moe::fuzz::caseFile); }
TEST(FuzzReplay, Plan) { replay("plan", moe::fuzz::plan); }
TEST(FuzzReplay, ModelConfig) { replay("model_config", moe::fuzz::modelConfig); }
TEST(FuzzReplay, RunResult) { replay("run_result", moe::fuzz::runResult); }

}  // namespace
