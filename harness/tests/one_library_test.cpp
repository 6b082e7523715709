// One copy of each communication library per process (issue 16): a rank
// that has used the gloo backend maps no libgloo*.so at all (libtorch links
// its Gloo statically into libtorch_cpu.so), at most one libnccl*.so, and
// that one is the NCCL libtorch links (MOE_TORCH_NCCL_LIB, found next to
// libtorch at configure time; empty for a libtorch without CUDA). The Gloo
// code the backend runs is libtorch's own: the process group's symbols
// resolve into libtorch_cpu.
#include <dlfcn.h>
#include <limits.h>
#include <stdlib.h>

#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "harness/tests/rank_test_util.h"

namespace moe {
namespace {

std::string realPath(const std::string& p) {
  char buf[PATH_MAX];
  return realpath(p.c_str(), buf) ? std::string(buf) : p;
}

std::string baseName(const std::string& p) { return p.substr(p.rfind('/') + 1); }

// The distinct real paths of the files mapped into this process.
std::set<std::string> mappedFiles() {
  std::set<std::string> files;
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    const auto slash = line.find('/');
    if (slash == std::string::npos) continue;
    std::string path = line.substr(slash);
    const auto deleted = path.find(" (deleted)");
    if (deleted != std::string::npos) path.resize(deleted);
    files.insert(realPath(path));
  }
  return files;
}

// Empty when the process maps one Gloo and one NCCL, both libtorch's;
// otherwise what is wrong.
std::string checkOneCopy() {
  std::ostringstream problems;
  std::set<std::string> ncclPaths;
  bool torchCpu = false;
  for (const auto& f : mappedFiles()) {
    const std::string name = baseName(f);
    if (name.rfind("libgloo", 0) == 0) problems << "a second Gloo is mapped: " << f << "; ";
    if (name.rfind("libnccl", 0) == 0) ncclPaths.insert(f);
    if (name.rfind("libtorch_cpu.so", 0) == 0) torchCpu = true;
  }
  if (!torchCpu) problems << "libtorch_cpu.so is not mapped (is this a libtorch process?); ";
  const std::string expected = std::string(MOE_TORCH_NCCL_LIB).empty() ? "" : realPath(MOE_TORCH_NCCL_LIB);
  if (ncclPaths.size() > 1) {
    problems << ncclPaths.size() << " NCCL libraries are mapped:";
    for (const auto& p : ncclPaths) problems << " " << p;
    problems << "; ";
  }
  for (const auto& p : ncclPaths)
    if (p != expected) problems << "mapped NCCL " << p << " is not libtorch's (" << expected << "); ";
  if (!expected.empty() && ncclPaths.empty())
    problems << "libtorch links NCCL (" << expected << ") but no libnccl is mapped; ";
  // The process group the gloo backend runs on, and Gloo itself, are
  // libtorch's code: their symbols resolve into libtorch_cpu.so.
  for (const char* sym : {"_ZN4c10d16ProcessGroupGloo23createDeviceForHostnameERKNSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEEEb",
                          "_ZN4gloo9allreduceERKNS_16AllreduceOptionsE"}) {
    void* addr = dlsym(RTLD_DEFAULT, sym);
    Dl_info info{};
    if (addr == nullptr || dladdr(addr, &info) == 0 || info.dli_fname == nullptr) {
      problems << sym << " does not resolve; ";
    } else if (baseName(realPath(info.dli_fname)).rfind("libtorch_cpu.so", 0) != 0) {
      problems << sym << " resolves into " << info.dli_fname << ", not libtorch_cpu.so; ";
    }
  }
  return problems.str();
}

TEST(OneLibrary, RankMapsOnlyLibtorchsGlooAndNccl) {
  auto run = ranktest::runRanks(2, [](const launch::RankContext& ctx) {
    auto world = ranktest::rankWorld();
    at::Tensor t = at::full({8}, static_cast<float>(ctx.rank + 1));
    world->allReduce(t);
    RANK_CHECK(t[0].item<float>() == 3.0f, "all_reduce gave ", t[0].item<float>());
    auto solo = world->subgroup("solo", {ctx.rank});  // a second process group
    (void)solo;
    const std::string problems = checkOneCopy();
    RANK_CHECK(problems.empty(), "rank ", ctx.rank, ": ", problems);
    return 0;
  });
  ASSERT_TRUE(run.result.ok) << run.all();
}

}  // namespace
}  // namespace moe
