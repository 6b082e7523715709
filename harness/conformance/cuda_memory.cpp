// The CUDA lane's memory counters (run_plan_memory.h): the caching
// allocator's requested bytes of one device, current and peak. Compiled only
// when libtorch has CUDA (MOE_WITH_NCCL), with the CUDA headers on this file
// alone.
#include <c10/cuda/CUDACachingAllocator.h>

#include "harness/conformance/run_plan_memory.h"

namespace moe::ref {

namespace {
using c10::CachingAllocator::StatType;
}  // namespace

CudaMemoryStats cudaMemoryStats(int device) {
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(device));
  const auto& requested = stats.requested_bytes[static_cast<size_t>(StatType::AGGREGATE)];
  return {requested.current, requested.peak};
}

void cudaResetPeakMemory(int device) {
  c10::cuda::CUDACachingAllocator::resetPeakStats(static_cast<c10::DeviceIndex>(device));
}

}  // namespace moe::ref
