#include "harness/conformance/run_plan_memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include <algorithm>
#include <map>
#include <set>

#include "common/error.h"
#include "reference/placement/dist_tensor.h"
#include "reference/placement/layout.h"

namespace moe::ref {

RunMemoryProbe::RunMemoryProbe() : tracker_(AllocTracker::install()) {}

int64_t RunMemoryProbe::liveBytes() const {
  return device_.is_cuda() ? cudaMemoryStats(device_.index()).current : tracker_.liveBytes();
}

int64_t RunMemoryProbe::peakBytes() const {
  return device_.is_cuda() ? cudaMemoryStats(device_.index()).peak : tracker_.peakBytes();
}

int64_t RunMemoryProbe::resetPeak() {
  if (!device_.is_cuda()) return tracker_.resetPeak();
  cudaResetPeakMemory(device_.index());
  return cudaMemoryStats(device_.index()).current;
}

void RunMemoryProbe::beforeLoad(c10::Device device) {
  device_ = device;
  baseline_ = resetPeak();
}

void RunMemoryProbe::beginStep(int64_t heldBytes) {
  MOE_ASSERT(baseline_, "RunMemoryProbe: beginStep before beforeLoad");
  if (!atStep1_) atStep1_ = liveBytes() - *baseline_ - heldBytes;
  // The step's window restarts the peak (the baseline only needs its start).
  step_ = resetPeak();
}

void RunMemoryProbe::endStep(int64_t heldBytes) {
  MOE_ASSERT(step_, "RunMemoryProbe: endStep without beginStep");
  stepPeaks_.push_back(peakBytes() - *baseline_ - heldBytes);
  afterLast_ = liveBytes() - *baseline_ - heldBytes;
  step_.reset();
}

checks::MeasuredMemory RunMemoryProbe::measured(int64_t declaredBytes, int64_t replicatedBytes,
                                                int64_t allowanceBytes) const {
  checks::MeasuredMemory m;
  m.atStep1 = atStep1_.value_or(0);
  m.stepPeaks = stepPeaks_;
  m.afterLast = afterLast_;
  m.declaredBytes = declaredBytes;
  m.replicatedBytes = replicatedBytes;
  m.allowanceBytes = allowanceBytes;
  return m;
}

int64_t snapshotBytes(const std::vector<const std::vector<checks::ParamShard>*>& snapshots, c10::Device device) {
  std::set<const void*> seen;
  int64_t bytes = 0;
  for (const auto* v : snapshots)
    for (const auto& s : *v) {
      if (!s.local.defined() || !s.local.has_storage() || s.local.device() != device) continue;
      const auto& st = s.local.storage();
      // A snapshot spilled to a file (spillToDisk) is mapped memory, never
      // counted by the tracker: nothing to take off.
      if (!st.allocator()) continue;
      if (st.data() && !seen.insert(st.data()).second) continue;
      bytes += static_cast<int64_t>(st.nbytes());
    }
  return bytes;
}

int64_t wrapperSplit(const checks::ParamShard& shard, const plan::ParamPlacement& pp, const std::vector<int>& sizes) {
  int64_t n = 1;
  for (size_t d = 0; d < sizes.size(); ++d)
    if (shard.placements[d].isSharded() && !pp.placements[d].isSharded()) n *= sizes[d];
  return n;
}

// What may be live after a step beyond masters, gradients and AdamW moments
// (the declaration), for a wrapper that releases everything else:
//  - gathered compute copies, activations and autograd's saved tensors: 0.
//    The trainer drops its per-step parameter cache after backward, the
//    autograd graph goes with the loss at the end of step(), and clipping's
//    scaled gradient copies and AdamW's temporaries are freed when
//    optimizer.step() returns (AdamW's step count is an integer, not a
//    tensor). Measured: none and zero3 hold exactly their declaration.
//  - gradient padding: a sharding wrapper reduce-scatters a gradient into a
//    block padded to the group's largest piece (NCCL needs even blocks) and
//    may keep the gradient as a view of that block, as FSDP2 keeps its
//    padded sharded tensors; the declaration counts the view's elements.
//    torch.chunk's largest piece of R rows over n ranks is ceil(R/n) (and
//    chunking over several dims composes to ceil(R/n) over their product),
//    so a rank holding r rows keeps (ceil(R/n) - r) padding rows of
//    rowNumel fp32 elements. A wrapper that pads its masters (zero3) declares
//    that padding itself; its shards are reported plan-local (n = 1, 0 here).
int64_t memoryAllowance(const std::vector<checks::ParamShard>& shards, const plan::AppliedPlan& plan,
                        const mesh::DeviceMesh& mesh) {
  const auto sizes = meshSizes(mesh);
  const auto coords = mesh.coords();
  int64_t bytes = 0;
  for (const auto& s : shards) {
    const auto& pp = plan.param(s.name);
    const int64_t n = wrapperSplit(s, pp, sizes);
    if (n == 1) continue;
    const auto planLocal = computeLayout(pp.globalShape, pp.placements, sizes, coords).localShape;
    const auto mine = computeLayout(s.globalShape, s.placements, sizes, coords).localShape;
    if (planLocal.empty()) continue;
    int64_t rowNumel = 1;
    for (size_t d = 1; d < planLocal.size(); ++d) rowNumel *= planLocal[d];
    const int64_t largest = (planLocal[0] + n - 1) / n;
    bytes += std::max<int64_t>(0, largest - mine[0]) * rowNumel * 4;
  }
  return bytes;
}

checks::MemoryInputs memoryInputs(const parallel::StoreMemory& memory, int64_t optimizerBytes,
                                  const plan::AppliedPlan& plan, const mesh::DeviceMesh& mesh,
                                  const std::vector<checks::ParamShard>& shards,
                                  const std::vector<checks::FlatPartition>& flatPartitions) {
  const auto sizes = meshSizes(mesh);
  const auto coords = mesh.coords();
  checks::MemoryInputs in;
  in.paramBytes = memory.paramBytes;
  in.gradBytes = memory.gradBytes;
  in.paddingBytes = memory.paddingBytes;
  in.optimizerBytes = optimizerBytes;
  // The replicated layout: every plan-local tensor whole in fp32, with its
  // gradient and two AdamW moments.
  for (const auto& pp : plan.params)
    in.replicatedBytes += 16 * computeLayout(pp.globalShape, pp.placements, sizes, coords).numel();
  std::map<std::string, int64_t> described;  // elements each parameter's placements give this rank
  for (const auto& s : shards) described[s.name] = computeLayout(s.globalShape, s.placements, sizes, coords).numel();
  if (!flatPartitions.empty()) {
    // Flat partitions: rank r of a group of n holds elements [r*P, (r+1)*P)
    // of the N plan-local elements of the group's members, P = ceil(N/n);
    // what lies beyond N is padding. N comes from the placements, not from
    // the store, so a store that partitions wrongly does not match.
    for (const auto& p : flatPartitions) {
      int64_t N = 0;
      for (const auto& name : p.params) N += described.at(name);
      const int rank = mesh.world()->rank();
      const auto group = mesh.shape().groupRanks(rank, p.dims);  // ascending: r is the index in it
      const int64_t n = static_cast<int64_t>(group.size());
      const int64_t r = std::find(group.begin(), group.end(), rank) - group.begin();
      const int64_t P = (N + n - 1) / n, lo = std::min(N, r * P), hi = std::min(N, (r + 1) * P);
      in.placementParamBytes += 4 * (hi - lo);
    }
  } else {
    for (const auto& [name, numel] : described) in.placementParamBytes += 4 * numel;
  }
  return in;
}

nlohmann::json memoryJson(const checks::MemoryInputs& m) {
  const int64_t total = m.paramBytes + m.gradBytes + m.optimizerBytes;
  return {{"param_bytes", m.paramBytes}, {"grad_bytes", m.gradBytes}, {"optimizer_bytes", m.optimizerBytes},
          {"replicated_total_bytes", m.replicatedBytes},
          {"ratio", m.replicatedBytes ? static_cast<double>(total) / static_cast<double>(m.replicatedBytes) : 0.0}};
}

#ifndef MOE_WITH_NCCL
// A build without CUDA never reaches a CUDA lane (createWorld refuses it);
// these exist so the probe links.
CudaMemoryStats cudaMemoryStats(int device) {
  fail("CUDA memory counters of device ", device, ": this moe-harness was built without CUDA");
}
void cudaResetPeakMemory(int device) {
  fail("CUDA memory counters of device ", device, ": this moe-harness was built without CUDA");
}
#endif

}  // namespace moe::ref

namespace moe::ref {

void spillToDisk(std::vector<checks::ParamShard>& shards, const std::string& dir, int64_t minBytes) {
  int64_t total = 0;
  for (const auto& s : shards)
    if (s.local.defined() && s.local.is_cpu()) total += s.local.numel() * static_cast<int64_t>(s.local.element_size());
  if (total < minBytes) return;
  const std::string path = moe::str(dir, "/moe-harness-snapshot-", ::getpid(), "-", static_cast<const void*>(&shards));
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) fail("snapshot spill ", path, ": cannot create: ", std::strerror(errno));
  ::unlink(path.c_str());  // the mapping keeps the data; nothing is left behind
  constexpr int64_t kAlign = 64;
  std::vector<int64_t> offsets;
  int64_t offset = 0;
  for (const auto& s : shards) {
    offsets.push_back(offset);
    if (!s.local.defined() || !s.local.is_cpu()) continue;
    const auto t = s.local.contiguous();
    const char* p = static_cast<const char*>(t.data_ptr());
    int64_t left = t.numel() * static_cast<int64_t>(t.element_size()), at = offset;
    while (left > 0) {
      const ssize_t n = ::pwrite(fd, p, static_cast<size_t>(left), at);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        const int e = errno;
        ::close(fd);
        fail("snapshot spill ", path, ": write failed: ", std::strerror(e));
      }
      p += n, at += n, left -= n;
    }
    offset = (at + kAlign - 1) / kAlign * kAlign;
  }
  if (offset == 0) {
    ::close(fd);
    return;
  }
  // Private and writable: a judge that writes into a snapshot gets its own
  // page (copy on write), never the file's.
  void* base = ::mmap(nullptr, static_cast<size_t>(offset), PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (base == MAP_FAILED) fail("snapshot spill ", path, ": mmap of ", offset, " bytes failed: ", std::strerror(errno));
  const std::shared_ptr<void> mapping(base, [offset](void* b) { ::munmap(b, static_cast<size_t>(offset)); });
  for (size_t i = 0; i < shards.size(); ++i) {
    auto& s = shards[i];
    if (!s.local.defined() || !s.local.is_cpu()) continue;
    s.local = at::from_blob(static_cast<char*>(base) + offsets[i], s.local.sizes(),
                            [mapping](void*) {}, s.local.options());
  }
}

}  // namespace moe::ref
