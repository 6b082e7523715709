#pragma once
// Measured CPU memory: a tracking wrapper around libtorch's CPU allocator.
//
// AllocTracker::install() puts a wrapper in front of the current CPU
// allocator through c10's public allocator API (c10::SetCPUAllocator with a
// priority above the default's), so every CPU tensor storage libtorch
// allocates afterwards is counted: live bytes now, and the peak of live bytes
// since the last resetPeak(). The counters are atomics; allocations and frees
// may come from any thread.
//
// Contract: what is counted
//  - the bytes REQUESTED from c10's CPU allocator (Allocator::allocate(n),
//    and the raw interface raw_allocate/raw_deallocate that oneDNN uses)
//    after install(), until they are freed: the storage of every CPU tensor
//    created after install (parameters, gradients, optimizer state, autograd
//    saved tensors, temporaries), including a storage that is resized later.
// What is NOT counted
//  - storage allocated before install() (freeing it later does not change
//    the counters either: its deleter is the old allocator's);
//  - memory that does not come from c10's CPU allocator: the C++ heap
//    (std::vector, gloo buffers, the flight recorder), libraries' own
//    allocations (oneDNN scratch from malloc, MKL), tensors created with
//    from_blob over foreign memory, CUDA memory;
//  - the allocator's own overhead (malloc headers, alignment padding, the
//    side table of this wrapper).
// So live bytes are a LOWER bound of the process's memory and an exact count
// of libtorch's CPU tensor storage, which is what the data-parallel wrappers
// declare (ParamStore::memory()).
//
// The wrapper has static lifetime and is never removed (storages keep
// pointers to it). install() is idempotent; it throws HarnessError when
// another allocator with a higher priority is already installed or when the
// current allocator has no raw interface (c10's default has one).
#include <atomic>
#include <cstdint>

namespace moe {

class AllocTracker {
 public:
  // The priority passed to c10::SetCPUAllocator: above the default (0).
  static constexpr uint8_t kPriority = 200;

  // Installs the wrapper once per process (thread-safe); returns it.
  static AllocTracker& install();
  // The installed tracker, or nullptr before install().
  static AllocTracker* installed();

  // Bytes of tracked storage alive now.
  int64_t liveBytes() const { return live_.load(std::memory_order_relaxed); }
  // Maximum of liveBytes() since the last resetPeak() (or install()).
  int64_t peakBytes() const { return peak_.load(std::memory_order_relaxed); }
  // Number of tracked allocations so far (non-empty ones).
  int64_t allocations() const { return allocations_.load(std::memory_order_relaxed); }
  // Starts a new peak window: peak = live now. Returns live now. An
  // allocation on another thread racing with the reset may be missed by the
  // new peak (run-plan resets between steps, when no other thread allocates).
  int64_t resetPeak();

  // Called by the wrapper (public for its free functions; not for callers).
  void added(int64_t bytes);
  void removed(int64_t bytes);

 private:
  AllocTracker() = default;
  std::atomic<int64_t> live_{0};
  std::atomic<int64_t> peak_{0};
  std::atomic<int64_t> allocations_{0};
};

// A measuring window over the tracker ("ledger" of one phase): opened by the
// constructor or restart(), it reports what was allocated since then.
// Windows share the tracker's one peak: opening (or restarting) a window
// restarts the peak of every open window, so use one window at a time for
// peaks (live deltas of several windows are always right).
class MemoryWindow {
 public:
  // Installs the tracker if needed, then opens the window.
  MemoryWindow();
  explicit MemoryWindow(AllocTracker& tracker);

  void restart();
  int64_t startBytes() const { return start_; }  // live bytes when opened
  int64_t liveDelta() const;                      // live now - start
  int64_t peakDelta() const;                      // peak since opened - start (>= 0)

 private:
  AllocTracker& tracker_;
  int64_t start_ = 0;
};

}  // namespace moe
