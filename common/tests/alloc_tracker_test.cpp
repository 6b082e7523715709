// AllocTracker (common/alloc_tracker.h): exact live and peak byte
// counts of CPU tensor storage. Expected values are computed from the tensor
// shapes and element sizes, never read back from the tracker's own state.
#include <ATen/ATen.h>
#include <c10/core/CPUAllocator.h>
#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "common/alloc_tracker.h"

namespace moe {
namespace {

TEST(AllocTracker, InstallIsIdempotentAndBecomesTheCpuAllocator) {
  AllocTracker& a = AllocTracker::install();
  AllocTracker& b = AllocTracker::install();
  EXPECT_EQ(&a, &b);
  EXPECT_EQ(AllocTracker::installed(), &a);
  EXPECT_NE(c10::GetCPUAllocator(), c10::GetDefaultCPUAllocator());
}

TEST(AllocTracker, CountsLiveAndPeakBytesOfTensors) {
  MemoryWindow w;
  auto t = at::empty({1000}, at::kFloat);  // 4000 B
  EXPECT_EQ(w.liveDelta(), 4000);
  EXPECT_EQ(w.peakDelta(), 4000);
  auto u = at::empty({25, 10}, at::kDouble);  // 2000 B
  EXPECT_EQ(w.liveDelta(), 6000);
  EXPECT_EQ(w.peakDelta(), 6000);
  t.reset();
  EXPECT_EQ(w.liveDelta(), 2000);
  EXPECT_EQ(w.peakDelta(), 6000) << "the peak stays at the maximum";
  u.reset();
  EXPECT_EQ(w.liveDelta(), 0);
  EXPECT_EQ(w.peakDelta(), 6000);
  w.restart();
  EXPECT_EQ(w.peakDelta(), 0) << "a restarted window starts a new peak";
}

TEST(AllocTracker, PeakOfSequentialTemporariesIsTheLargestNotTheSum) {
  MemoryWindow w;
  { auto a = at::empty({512}, at::kFloat); }  // 2048 B, freed
  { auto b = at::empty({300}, at::kBFloat16); }  // 600 B, freed
  EXPECT_EQ(w.liveDelta(), 0);
  EXPECT_EQ(w.peakDelta(), 2048);
}

TEST(AllocTracker, ViewsAndCopiesCountTheirStorageOnce) {
  MemoryWindow w;
  auto t = at::zeros({8, 16}, at::kFloat);  // 512 B
  auto view = t.narrow(0, 2, 3);            // shares the storage
  EXPECT_EQ(w.liveDelta(), 512);
  auto copy = view.clone();  // 3 x 16 x 4 = 192 B
  EXPECT_EQ(w.liveDelta(), 512 + 192);
  t.reset();
  EXPECT_EQ(w.liveDelta(), 512 + 192) << "the view keeps the whole storage alive";
  view.reset();
  EXPECT_EQ(w.liveDelta(), 192);
}

TEST(AllocTracker, ResizeReallocatesThroughTheTracker) {
  MemoryWindow w;
  auto t = at::empty({10}, at::kFloat);
  t.resize_({1000});
  EXPECT_EQ(w.liveDelta(), 4000) << "the 40-byte storage was replaced by a 4000-byte one";
  EXPECT_EQ(w.peakDelta(), 4040) << "both were alive during the copy";
}

TEST(AllocTracker, EmptyTensorsCountNothing) {
  MemoryWindow w;
  auto t = at::empty({0, 7}, at::kFloat);
  EXPECT_EQ(w.liveDelta(), 0);
  EXPECT_EQ(w.peakDelta(), 0);
}

TEST(AllocTracker, RawInterfaceIsCountedAndForeignPointersAreNot) {
  AllocTracker::install();
  MemoryWindow w;
  c10::Allocator* cpu = c10::GetCPUAllocator();
  ASSERT_NE(cpu->raw_deleter(), nullptr);
  void* p = cpu->raw_allocate(777);
  EXPECT_EQ(w.liveDelta(), 777);
  cpu->raw_deallocate(p);
  EXPECT_EQ(w.liveDelta(), 0);
  // Memory from the allocator that was current before install (as oneDNN
  // may hold it) freed through the tracker: passed on, never counted.
  void* before = c10::GetDefaultCPUAllocator()->raw_allocate(4096);
  cpu->raw_deallocate(before);
  EXPECT_EQ(w.liveDelta(), 0);
  EXPECT_EQ(w.peakDelta(), 777);
}

TEST(AllocTracker, StorageFromTheUnderlyingAllocatorIsNotCounted) {
  AllocTracker::install();
  MemoryWindow w;
  {
    c10::DataPtr d = c10::GetDefaultCPUAllocator()->allocate(1000);  // "allocated before install"
    EXPECT_EQ(w.liveDelta(), 0);
  }
  EXPECT_EQ(w.liveDelta(), 0);
  EXPECT_EQ(w.peakDelta(), 0);
}

TEST(AllocTracker, ConcurrentAllocationsBalanceAndThePeakCoversOneOfEach) {
  MemoryWindow w;
  const int64_t before = AllocTracker::installed()->allocations();
  constexpr int kThreads = 4, kIters = 500;
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i)
    threads.emplace_back([i] {
      for (int k = 0; k < kIters; ++k) {
        auto t = at::empty({64 * (i + 1)}, at::kFloat);  // 256 (i+1) B
        t.fill_(static_cast<float>(k));
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(w.liveDelta(), 0);
  EXPECT_GE(w.peakDelta(), 256 * kThreads);  // the largest thread's tensor at least
  EXPECT_LE(w.peakDelta(), 256 * (1 + 2 + 3 + 4));  // at most one tensor per thread at once
  EXPECT_EQ(AllocTracker::installed()->allocations() - before, kThreads * kIters);
}

}  // namespace
}  // namespace moe
