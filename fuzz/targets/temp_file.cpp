#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "common/error.h"
#include "fuzz/targets.h"

namespace moe::fuzz {
namespace {

struct TempDir {
  std::string path;
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/moe-fuzz-XXXXXX";
    MOE_ASSERT(mkdtemp(tmpl.data()) != nullptr, "cannot create a temporary directory ", tmpl);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

}  // namespace

std::string writeTempFile(const std::string& name, const uint8_t* data, size_t size) {
  static TempDir dir;
  const std::string file = dir.path + "/" + name;
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  out.close();
  MOE_ASSERT(out.good(), "cannot write ", file);
  return file;
}

}  // namespace moe::fuzz
