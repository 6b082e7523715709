#include "common/alloc_tracker.h"

#include <c10/core/CPUAllocator.h>

#include <mutex>
#include <unordered_map>

#include "common/error.h"

namespace moe {
namespace {

// The wrapper hands out the underlying allocator's own pointers (data ==
// context, as the raw interface requires: oneDNN allocates through
// raw_allocate and frees through the CURRENT allocator's raw_deleter). The
// size of each live allocation is kept in a side table, so the deleter can
// tell our allocations from ones made before install(): a pointer it does
// not know is passed to the underlying deleter uncounted.
class TrackingAllocator final : public c10::Allocator {
 public:
  TrackingAllocator(c10::Allocator* underlying, AllocTracker* tracker)
      : underlying_(underlying), underlyingDelete_(underlying->raw_deleter()), tracker_(tracker) {}

  // Non-const since libtorch 2.3.
  c10::DataPtr allocate(size_t n) override {
    c10::DataPtr dp = underlying_->allocate(n);
    MOE_ASSERT(dp.get() == dp.get_context() && dp.get_deleter() == underlyingDelete_,
               "alloc_tracker: the CPU allocator returned a pointer without its raw deleter (", n, " bytes)");
    void* data = dp.release_context();
    if (data) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        sizes_[data] = n;
      }
      tracker_->added(static_cast<int64_t>(n));
    }
    return {data, data, &trackedDelete, dp.device()};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &trackedDelete; }

  // Pure virtual since libtorch 2.3: a plain byte copy, as the CPU allocator's.
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  void release(void* data) {
    if (!data) return;
    int64_t n = -1;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = sizes_.find(data);
      if (it != sizes_.end()) {
        n = static_cast<int64_t>(it->second);
        sizes_.erase(it);
      }
    }
    // Freed before the counter drops: the peak never counts less than is held.
    underlyingDelete_(data);
    if (n >= 0) tracker_->removed(n);
  }

  static void trackedDelete(void* data);

 private:
  c10::Allocator* underlying_;
  c10::DeleterFnPtr underlyingDelete_;
  AllocTracker* tracker_;
  mutable std::mutex mu_;
  mutable std::unordered_map<void*, size_t> sizes_;
};

// Static lifetime (storages and oneDNN keep pointers to the allocator), so
// both are leaked on purpose.
std::atomic<AllocTracker*> gTracker{nullptr};
TrackingAllocator* gAllocator = nullptr;

void TrackingAllocator::trackedDelete(void* data) { gAllocator->release(data); }

}  // namespace

AllocTracker& AllocTracker::install() {
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  if (AllocTracker* t = gTracker.load()) return *t;
  c10::Allocator* current = c10::GetCPUAllocator();
  if (!current->raw_deleter())
    fail("alloc_tracker: the current CPU allocator has no raw interface (raw_deleter), cannot wrap it");
  auto* tracker = new AllocTracker();
  gAllocator = new TrackingAllocator(current, tracker);
  c10::SetCPUAllocator(gAllocator, kPriority);
  if (c10::GetCPUAllocator() != gAllocator)
    fail("alloc_tracker: c10::SetCPUAllocator(priority ", int{kPriority},
         ") did not take effect: an allocator with a higher priority is installed");
  gTracker.store(tracker);
  return *tracker;
}

AllocTracker* AllocTracker::installed() { return gTracker.load(); }

void AllocTracker::added(int64_t bytes) {
  const int64_t now = live_.fetch_add(bytes, std::memory_order_relaxed) + bytes;
  allocations_.fetch_add(1, std::memory_order_relaxed);
  int64_t peak = peak_.load(std::memory_order_relaxed);
  while (now > peak && !peak_.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
}

void AllocTracker::removed(int64_t bytes) { live_.fetch_sub(bytes, std::memory_order_relaxed); }

int64_t AllocTracker::resetPeak() {
  const int64_t now = live_.load(std::memory_order_relaxed);
  peak_.store(now, std::memory_order_relaxed);
  return now;
}

MemoryWindow::MemoryWindow() : MemoryWindow(AllocTracker::install()) {}

MemoryWindow::MemoryWindow(AllocTracker& tracker) : tracker_(tracker) { restart(); }

void MemoryWindow::restart() { start_ = tracker_.resetPeak(); }

int64_t MemoryWindow::liveDelta() const { return tracker_.liveBytes() - start_; }

int64_t MemoryWindow::peakDelta() const { return tracker_.peakBytes() - start_; }

}  // namespace moe
