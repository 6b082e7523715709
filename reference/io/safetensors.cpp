#include "reference/io/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>
#include <utility>

#include "common/error.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors I/O copies raw bytes and assumes a little-endian host");

namespace moe::io {
namespace {

struct DtypePair {
  SafetensorsDtype st;
  at::ScalarType at;
};
constexpr DtypePair kDtypePairs[] = {
    {SafetensorsDtype::kF64, at::kDouble}, {SafetensorsDtype::kF32, at::kFloat},
    {SafetensorsDtype::kF16, at::kHalf},   {SafetensorsDtype::kBF16, at::kBFloat16},
    {SafetensorsDtype::kI64, at::kLong},
};

std::string errnoText() { return std::strerror(errno); }

// Closes on scope exit unless released; keeps every error path leak-free.
class FdGuard {
 public:
  explicit FdGuard(int fd) : fd_(fd) {}
  ~FdGuard() {
    if (fd_ >= 0) ::close(fd_);
  }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

void writeAll(int fd, const void* data, size_t len, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (len > 0) {
    ssize_t n = ::write(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail(path, ": write failed: ", errnoText());
    p += n;
    len -= static_cast<size_t>(n);
  }
}

}  // namespace

at::ScalarType toScalarType(SafetensorsDtype dtype) {
  for (const DtypePair& p : kDtypePairs)
    if (p.st == dtype) return p.at;
  MOE_ASSERT(false, "unhandled SafetensorsDtype ", static_cast<int>(dtype));
  return at::kFloat;
}

SafetensorsDtype toSafetensorsDtype(at::ScalarType type, const std::string& where,
                                    const std::string& name) {
  for (const DtypePair& p : kDtypePairs)
    if (p.at == type) return p.st;
  fail(where, ": tensor '", name, "': dtype ", c10::toString(type),
       " is not supported (supported: ", supportedDtypeNames(), ")");
}

// --- reader -----------------------------------------------------------------

SafetensorsReader::SafetensorsReader(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) fail(path, ": cannot open: ", errnoText());
  FdGuard owned(fd_);  // the destructor does not run if we throw below
  struct stat st {};
  if (::fstat(fd_, &st) != 0) fail(path, ": cannot stat: ", errnoText());
  if (!S_ISREG(st.st_mode)) fail(path, ": not a regular file");
  fileSize_ = static_cast<uint64_t>(st.st_size);

  std::vector<uint8_t> prefix(std::min<uint64_t>(kSizePrefixBytes, fileSize_));
  preadExact(prefix.data(), prefix.size(), 0);
  const uint64_t n = parseHeaderSize(prefix.data(), prefix.size(), fileSize_, path);
  // The size prefix is read again with the header: one buffer for the parser.
  std::vector<uint8_t> head(kSizePrefixBytes + n);
  preadExact(head.data(), head.size(), 0);
  header_ = parseSafetensorsHeader(head.data(), head.size(), fileSize_, path);
  owned.release();
}

SafetensorsReader::~SafetensorsReader() {
  if (fd_ >= 0) ::close(fd_);
}

void SafetensorsReader::preadExact(void* dst, uint64_t len,
                                   uint64_t offset) const {
  char* p = static_cast<char*>(dst);
  while (len > 0) {
    ssize_t n = ::pread(fd_, p, len, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail(path_, ": read of ", len, " bytes at ", offset,
                    " failed: ", errnoText());
    if (n == 0)
      fail(path_, ": unexpected end of file at byte ", offset,
           " (was the file truncated after it was opened?)");
    bytesRead_ += static_cast<uint64_t>(n);
    p += n;
    len -= static_cast<uint64_t>(n);
    offset += static_cast<uint64_t>(n);
  }
}

std::vector<std::string> SafetensorsReader::names() const {
  std::vector<std::string> out;
  for (const TensorEntry& e : header_.tensors) out.push_back(e.name);
  return out;
}

bool SafetensorsReader::has(const std::string& name) const {
  return header_.find(name) != nullptr;
}

const TensorEntry& SafetensorsReader::entry(const std::string& name) const {
  const TensorEntry* e = header_.find(name);
  if (!e) failNoTensor(path_, name, names());
  return *e;
}

std::vector<int64_t> SafetensorsReader::shape(const std::string& name) const {
  return entry(name).shape;
}

at::ScalarType SafetensorsReader::scalarType(const std::string& name) const {
  return toScalarType(entry(name).dtype);
}

at::Tensor SafetensorsReader::readSlice(
    const std::string& name, const std::vector<SliceRange>& ranges) const {
  const TensorEntry& e = entry(name);
  const std::vector<SliceRange> r = completeRanges(path_, name, e.shape, ranges);
  const int64_t rank = static_cast<int64_t>(e.shape.size());
  std::vector<int64_t> outShape;
  for (const SliceRange& x : r) outShape.push_back(x.length);
  at::Tensor out = at::empty(outShape, at::TensorOptions().dtype(toScalarType(e.dtype)));
  if (out.numel() == 0) return out;

  // The selection is a set of equal contiguous runs: dims after `k` (the
  // last dim not read whole) are whole, so each run is r[k].length rows of
  // stride[k] elements, and the runs are indexed by dims [0, k).
  int64_t k = rank - 1;
  while (k >= 0 && r[k].start == 0 && r[k].length == e.shape[k]) --k;
  std::vector<uint64_t> stride(rank, 1);  // in elements
  for (int64_t d = rank - 2; d >= 0; --d) stride[d] = stride[d + 1] * e.shape[d + 1];
  const uint64_t elem = dtypeSize(e.dtype);
  if (k < 0) {  // everything: one run
    preadExact(out.data_ptr(), e.nbytes(), header_.dataStart() + e.begin);
    return out;
  }
  const uint64_t runBytes = static_cast<uint64_t>(r[k].length) * stride[k] * elem;
  std::vector<int64_t> idx(k, 0);  // odometer over dims [0, k)
  auto* dst = static_cast<uint8_t*>(out.data_ptr());
  while (true) {
    uint64_t elemOffset = static_cast<uint64_t>(r[k].start) * stride[k];
    for (int64_t d = 0; d < k; ++d)
      elemOffset += static_cast<uint64_t>(r[d].start + idx[d]) * stride[d];
    preadExact(dst, runBytes, header_.dataStart() + e.begin + elemOffset * elem);
    dst += runBytes;
    int64_t d = k - 1;
    for (; d >= 0; --d) {
      if (++idx[d] < r[d].length) break;
      idx[d] = 0;
    }
    if (d < 0) break;
  }
  return out;
}

// --- writer -----------------------------------------------------------------

void writeSafetensors(const std::string& path,
                      const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const WriteOptions& options) {
  std::vector<TensorEntry> entries;
  std::vector<at::Tensor> data;
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name.empty()) fail(path, ": cannot write a tensor with an empty name");
    if (name == kMetadataKey)
      fail(path, ": '", kMetadataKey, "' is reserved and cannot name a tensor");
    if (!seen.insert(name).second)
      fail(path, ": tensor '", name, "' is given twice");
    if (!t.defined()) fail(path, ": tensor '", name, "' is undefined");
    TensorEntry e;
    e.name = name;
    e.dtype = toSafetensorsDtype(t.scalar_type(), path, name);
    e.shape = t.sizes().vec();
    e.begin = offset;
    e.end = offset + static_cast<uint64_t>(t.numel()) * dtypeSize(e.dtype);
    offset = e.end;
    entries.push_back(e);
    data.push_back(t.detach().to(at::kCPU).contiguous());
  }
  const std::string head = encodeSafetensorsHeader(entries, options.metadata);

  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail(tmp, ": cannot create: ", errnoText());
  try {
    FdGuard guard(fd);
    writeAll(fd, head.data(), head.size(), tmp);
    for (const at::Tensor& t : data)
      writeAll(fd, t.data_ptr(), t.numel() * t.element_size(), tmp);
    if (::close(guard.release()) != 0) fail(tmp, ": close failed: ", errnoText());
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string err = errnoText();
    ::unlink(tmp.c_str());
    fail(path, ": cannot rename ", tmp, " into place: ", err);
  }
}

}  // namespace moe::io
