#pragma once
// Shared helpers of the reference/io tests: temporary files, bitwise tensor
// comparison, catching HarnessError messages.
#include "common/error_of.h"
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstring>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "common/error.h"

namespace moe::io::testing {

// A fresh directory under TMPDIR, removed with everything in it on scope exit.
class TempDir {
 public:
  TempDir() {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "moe_io_test_XXXXXX").string();
    char* made = ::mkdtemp(pattern.data());
    if (!made) throw std::runtime_error("mkdtemp failed for " + pattern);
    path_ = made;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline void writeBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

inline std::string readBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The 8-byte little-endian size prefix, written out byte by byte from the
// spec (independent of the code under test).
inline std::string sizePrefix(uint64_t n) {
  std::string out;
  for (int i = 0; i < 8; ++i) out += static_cast<char>((n >> (8 * i)) & 0xff);
  return out;
}

// A file: size prefix, `header` verbatim, then `dataBytes` zero bytes.
inline std::string fileWithHeader(const std::string& header, size_t dataBytes) {
  return sizePrefix(header.size()) + header + std::string(dataBytes, '\0');
}

// True when a and b have the same dtype, shape and bytes.
inline bool bitwiseEqual(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  const at::Tensor ca = a.contiguous(), cb = b.contiguous();
  return std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.numel() * ca.element_size()) == 0;
}

using ::moe::testutil::errorOf;

}  // namespace moe::io::testing
