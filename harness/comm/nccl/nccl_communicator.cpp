// The NCCL backend of the Communicator. Over 500 lines on purpose: the
// device probe (in a forked child, so a broken driver cannot take the rank
// down), communicator set-up over the store, the CUDA stream and error
// handling, and one function per collective with its NCCL status check form
// one unit that mirrors gloo/gloo_communicator.cpp; split, each piece would
// need the same private state.
#include "harness/comm/nccl/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <thread>
#include <utility>

namespace moe::comm {
namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* kBackend = "nccl";
constexpr const char* kUniqueIdKey = "nccl/world/uniqueId";

std::string cudaErrorText(cudaError_t e) {
  return str(cudaGetErrorName(e), ": ", cudaGetErrorString(e));
}

// ncclGetLastError carries the detail (which peer, which transport) that the
// result code lacks.
std::string ncclErrorText(ncclResult_t r, ncclComm_t comm) {
  const char* last = ncclGetLastError(comm);
  std::string text = ncclGetErrorString(r);
  if (last != nullptr && *last != '\0') text += str(" (", last, ")");
  return text;
}

}  // namespace
}  // namespace moe::comm

// Both macros throw HarnessError naming `where` (rank and communicator), the
// call as written and the library's error text.
#define MOE_CUDA_CHECK_AT(where, call)                                          \
  do {                                                                          \
    cudaError_t moe_cuda_err_ = (call);                                         \
    if (moe_cuda_err_ != cudaSuccess)                                           \
      ::moe::fail((where), ": ", #call, " failed: ",                            \
                  ::moe::comm::cudaErrorText(moe_cuda_err_));                   \
  } while (0)

// Non-blocking communicators may answer ncclInProgress; completion is then
// awaited by the caller (awaitComm / waitForOp), so only real errors throw.
#define MOE_NCCL_CHECK_AT(where, ncclComm, call)                                    \
  do {                                                                          \
    ncclResult_t moe_nccl_res_ = (call);                                        \
    if (moe_nccl_res_ != ncclSuccess && moe_nccl_res_ != ncclInProgress)        \
      ::moe::fail((where), ": ", #call, " failed: ",                            \
                  ::moe::comm::ncclErrorText(moe_nccl_res_, (ncclComm)));       \
  } while (0)

// Inside NcclCommunicator members.
#define MOE_CUDA_CHECK(call) MOE_CUDA_CHECK_AT(where(), call)
#define MOE_NCCL_CHECK(call) MOE_NCCL_CHECK_AT(where(), comm_, call)

namespace moe::comm {
namespace {

// Spins briefly, then sleeps: collectives of a few KB finish in microseconds,
// but a rank waiting for a slow peer should not burn a core (the machines
// running many ranks are often oversubscribed).
void backoff(int& spins) {
  if (++spins < 2000) {
    std::this_thread::yield();
  } else {
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

// Waits until a non-blocking communicator leaves ncclInProgress. Returns its
// final state (ncclSuccess or an error), or ncclInProgress when `deadline`
// passed first. A failing query returns its own error code.
ncclResult_t awaitComm(ncclComm_t comm, Clock::time_point deadline) {
  int spins = 0;
  for (;;) {
    ncclResult_t state = ncclSuccess;
    const ncclResult_t q = ncclCommGetAsyncError(comm, &state);
    if (q != ncclSuccess) return q;
    if (state != ncclInProgress) return state;
    if (Clock::now() > deadline) return ncclInProgress;
    backoff(spins);
  }
}

// Waits for `comm` after a creating call (init, split): on error or timeout
// the communicator is aborted and the call throws.
void awaitCreated(ncclComm_t comm, std::chrono::milliseconds timeout,
                  const std::string& where, const char* call) {
  const ncclResult_t state = awaitComm(comm, Clock::now() + timeout);
  if (state == ncclSuccess) return;
  const std::string detail =
      state == ncclInProgress
          ? str("did not complete within ", timeout.count(),
                " ms (CommOptions::timeout); are all ranks calling it?")
          : str("failed: ", ncclErrorText(state, comm));
  ncclCommAbort(comm);  // best effort: we are already failing
  fail(where, ": ", call, " ", detail);
}

ncclDataType_t toNcclType(const at::Tensor& t, const std::string& where, const char* op) {
  switch (t.scalar_type()) {
    case at::kFloat: return ncclFloat32;
    case at::kBFloat16: return ncclBfloat16;
    case at::kHalf: return ncclFloat16;
    case at::kDouble: return ncclFloat64;
    case at::kLong: return ncclInt64;
    default:
      fail(where, ": ", kBackend, " backend: ", op, " does not support dtype ",
           t.scalar_type());
  }
}

ncclRedOp_t toNcclOp(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return ncclSum;
    case ReduceOp::kAvg: return ncclAvg;
    case ReduceOp::kMax: return ncclMax;
    case ReduceOp::kMin: return ncclMin;
  }
  MOE_ASSERT(false, "unknown ReduceOp ", static_cast<int>(op));
  return ncclSum;
}

// Elements in one row along dim 0 (1 for a 1-D tensor).
int64_t rowNumel(const at::Tensor& t) {
  int64_t n = 1;
  for (int64_t d = 1; d < t.dim(); ++d) n *= t.size(d);
  return n;
}

// Address of row `row` of a contiguous tensor.
void* rowPtr(const at::Tensor& t, int64_t row) {
  return static_cast<char*>(t.data_ptr()) + row * rowNumel(t) * t.element_size();
}

std::vector<int64_t> equalSplits(const at::Tensor& t, int groupSize) {
  return std::vector<int64_t>(groupSize, groupSize > 0 ? t.size(0) / groupSize : 0);
}

class NcclCommunicator final : public Communicator {
 public:
  // Takes ownership of `comm` (already initialised, on `device`); aborts it
  // if construction fails.
  NcclCommunicator(std::string name, int rank, std::vector<int> globalRanks, int device,
                   ncclComm_t comm, std::chrono::milliseconds timeout)
      : Communicator(std::move(name), rank, std::move(globalRanks)),
        comm_(comm),
        device_(device),
        timeout_(timeout) {
    try {
      MOE_CUDA_CHECK(cudaSetDevice(device_));
      // A blocking (not cudaStreamNonBlocking) stream: CUDA orders it with the
      // legacy default stream, which is where torch queues work by default.
      MOE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamDefault));
      MOE_CUDA_CHECK(cudaMalloc(&barrierBuf_, sizeof(float)));
      MOE_CUDA_CHECK(cudaMemsetAsync(barrierBuf_, 0, sizeof(float), stream_));
      MOE_CUDA_CHECK(cudaStreamSynchronize(stream_));
    } catch (...) {
      release(/*graceful=*/false);
      throw;
    }
  }

  ~NcclCommunicator() override { release(/*graceful=*/true); }

  std::string backendName() const override { return kBackend; }

 protected:
  // The base class allocates its fingerprint exchange here.
  at::Device device() const override {
    return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device_));
  }

  void doAllReduce(at::Tensor& t, ReduceOp op) override {
    prepare("allReduce", {{"t", &t}});
    if (t.numel() == 0) return;  // every member has numel 0 (same counts)
    MOE_NCCL_CHECK(ncclAllReduce(t.data_ptr(), t.data_ptr(), t.numel(),
                                 toNcclType(t, where(), "allReduce"), toNcclOp(op), comm_,
                                 stream_));
    waitForOp("allReduce");
  }

  void doBroadcast(at::Tensor& t, int root) override {
    prepare("broadcast", {{"t", &t}});
    if (t.numel() == 0) return;
    MOE_NCCL_CHECK(ncclBroadcast(t.data_ptr(), t.data_ptr(), t.numel(),
                                 toNcclType(t, where(), "broadcast"), root, comm_, stream_));
    waitForOp("broadcast");
  }

  // A one-element all-reduce waited for on the host: no member returns before
  // every member has entered.
  void doBarrier() override {
    prepare("barrier", {});
    MOE_NCCL_CHECK(
        ncclAllReduce(barrierBuf_, barrierBuf_, 1, ncclFloat32, ncclSum, comm_, stream_));
    waitForOp("barrier");
  }

  void doSend(const at::Tensor& t, int peer) override {
    prepare("send", {{"t", &t}});
    if (t.numel() == 0) return;
    MOE_NCCL_CHECK(
        ncclSend(t.data_ptr(), t.numel(), toNcclType(t, where(), "send"), peer, comm_, stream_));
    waitForOp("send");
  }

  void doRecv(at::Tensor& t, int peer) override {
    prepare("recv", {{"t", &t}});
    if (t.numel() == 0) return;
    MOE_NCCL_CHECK(
        ncclRecv(t.data_ptr(), t.numel(), toNcclType(t, where(), "recv"), peer, comm_, stream_));
    waitForOp("recv");
  }

  // Equal blocks: ncclAllGather. Uneven blocks: one ncclBroadcast per rank,
  // rooted at the block's owner and written straight into its rows of `out`,
  // fused in one group so they progress together.
  void doAllGather(at::Tensor& out, const at::Tensor& in,
                   const std::vector<int64_t>& rowsPerRank) override {
    prepare("allGather", {{"out", &out}, {"in", &in}});
    checkSplits("allGather", "rowsPerRank", rowsPerRank);
    const ncclDataType_t type = toNcclType(out, where(), "allGather");
    const bool equal = std::all_of(rowsPerRank.begin(), rowsPerRank.end(),
                                   [&](int64_t n) { return n == rowsPerRank.front(); });
    if (equal) {
      if (in.numel() == 0) return;
      MOE_NCCL_CHECK(
          ncclAllGather(in.data_ptr(), out.data_ptr(), in.numel(), type, comm_, stream_));
    } else {
      Group group(this, "allGather");
      int64_t row = 0;
      for (int r = 0; r < size(); ++r) {
        const size_t count = rowsPerRank[r] * rowNumel(out);
        void* block = rowPtr(out, row);
        row += rowsPerRank[r];
        if (count == 0) continue;
        // Non-roots ignore sendbuff; pass their own block, a valid pointer.
        const void* send = r == rank() ? in.data_ptr() : block;
        MOE_NCCL_CHECK(ncclBroadcast(send, block, count, type, r, comm_, stream_));
      }
      group.end();
    }
    waitForOp("allGather");
  }

  // Equal blocks: ncclReduceScatter. Uneven blocks: one ncclReduce per rank
  // block, rooted at the rank that keeps it, fused in one group.
  void doReduceScatter(at::Tensor& out, const at::Tensor& in, ReduceOp op,
                       const std::vector<int64_t>& rowsPerRank) override {
    prepare("reduceScatter", {{"out", &out}, {"in", &in}});
    checkSplits("reduceScatter", "rowsPerRank", rowsPerRank);
    const ncclDataType_t type = toNcclType(in, where(), "reduceScatter");
    const ncclRedOp_t redOp = toNcclOp(op);
    const bool equal = std::all_of(rowsPerRank.begin(), rowsPerRank.end(),
                                   [&](int64_t n) { return n == rowsPerRank.front(); });
    if (equal) {
      if (out.numel() == 0) return;
      MOE_NCCL_CHECK(ncclReduceScatter(in.data_ptr(), out.data_ptr(), out.numel(), type, redOp,
                                       comm_, stream_));
    } else {
      Group group(this, "reduceScatter");
      int64_t row = 0;
      for (int r = 0; r < size(); ++r) {
        const size_t count = rowsPerRank[r] * rowNumel(in);
        const void* block = rowPtr(in, row);
        row += rowsPerRank[r];
        if (count == 0) continue;
        // recvbuff is only read on the root.
        void* recv = r == rank() ? out.data_ptr() : nullptr;
        MOE_NCCL_CHECK(ncclReduce(block, recv, count, type, redOp, r, comm_, stream_));
      }
      group.end();
    }
    waitForOp("reduceScatter");
  }

  // One group of per-peer send/recv (self included; NCCL pairs a rank's send
  // to itself with its own recv inside a group). Zero-row splits are skipped
  // on both sides, so the pairs still match.
  void doAllToAll(at::Tensor& out, const at::Tensor& in, const std::vector<int64_t>& outSplits,
                  const std::vector<int64_t>& inSplits) override {
    prepare("allToAll", {{"out", &out}, {"in", &in}});
    const std::vector<int64_t> outRows = outSplits.empty() ? equalSplits(out, size()) : outSplits;
    const std::vector<int64_t> inRows = inSplits.empty() ? equalSplits(in, size()) : inSplits;
    checkSplits("allToAll", "outSplits", outRows);
    checkSplits("allToAll", "inSplits", inRows);
    const ncclDataType_t type = toNcclType(in, where(), "allToAll");
    Group group(this, "allToAll");
    int64_t inRow = 0;
    int64_t outRow = 0;
    for (int peer = 0; peer < size(); ++peer) {
      const size_t sendCount = inRows[peer] * rowNumel(in);
      const size_t recvCount = outRows[peer] * rowNumel(out);
      if (sendCount > 0)
        MOE_NCCL_CHECK(ncclSend(rowPtr(in, inRow), sendCount, type, peer, comm_, stream_));
      if (recvCount > 0)
        MOE_NCCL_CHECK(ncclRecv(rowPtr(out, outRow), recvCount, type, peer, comm_, stream_));
      inRow += inRows[peer];
      outRow += outRows[peer];
    }
    group.end();
    waitForOp("allToAll");
  }

  // ncclCommSplit is collective over this communicator: members pass their
  // group index as color and their position in the group's list as key, so
  // the child's ranks follow the list order; non-members pass
  // NCCL_SPLIT_NOCOLOR and get no communicator.
  std::shared_ptr<Communicator> doSplit(const std::string& name,
                                        const std::vector<std::vector<int>>& groups,
                                        int groupIndex) override {
    prepare("split", {});
    const bool member = groupIndex >= 0;
    int key = rank();
    std::vector<int> childGlobal;
    if (member) {
      MOE_ASSERT(groupIndex < static_cast<int>(groups.size()), "groupIndex ", groupIndex,
                 " of ", groups.size(), " groups");
      const std::vector<int>& members = groups[groupIndex];
      const auto self = std::find(members.begin(), members.end(), rank());
      MOE_ASSERT(self != members.end(), where(), ": not in group ", groupIndex);
      key = static_cast<int>(self - members.begin());
      for (int m : members) childGlobal.push_back(globalRanks().at(m));
    }
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    config.splitShare = 0;  // independent resources: parent and child die in any order
    ncclComm_t child = nullptr;
    MOE_NCCL_CHECK(ncclCommSplit(comm_, member ? groupIndex : NCCL_SPLIT_NOCOLOR, key, &child,
                                 &config));
    // The split runs on the parent; a new child has its own state to await.
    const ncclResult_t parentState = awaitComm(comm_, Clock::now() + timeout_);
    if (parentState == ncclInProgress)
      abortAndFail(str("split '", name, "': ncclCommSplit did not complete within ",
                       timeout_.count(), " ms (CommOptions::timeout)"));
    if (parentState != ncclSuccess)
      abortAndFail(str("split '", name, "': ncclCommSplit failed: ",
                       ncclErrorText(parentState, comm_)));
    if (!member) {
      MOE_ASSERT(child == nullptr, where(), ": NCCL_SPLIT_NOCOLOR returned a communicator");
      return nullptr;
    }
    if (child == nullptr) fail(where(), ": ncclCommSplit for '", name, "' returned no communicator");
    awaitCreated(child, timeout_, str(where(), ": split '", name, "'"), "ncclCommSplit");
    int childSize = 0;
    int childRank = -1;
    ncclResult_t r = ncclCommCount(child, &childSize);
    if (r == ncclSuccess) r = ncclCommUserRank(child, &childRank);
    if (r != ncclSuccess || childSize != static_cast<int>(childGlobal.size()) || childRank != key) {
      const std::string detail =
          r != ncclSuccess ? ncclErrorText(r, child)
                           : str("got rank ", childRank, " of ", childSize, ", expected rank ",
                                 key, " of ", childGlobal.size());
      ncclCommAbort(child);
      fail(where(), ": split '", name, "': ", detail);
    }
    auto sub = std::make_shared<NcclCommunicator>(name, key, std::move(childGlobal), device_,
                                                  child, timeout_);
    sub->setVerify(verifying());
    return sub;
  }

 private:
  // ncclGroupStart/End pair that ends the group even when a call inside it
  // throws: NCCL's group depth is per thread and would otherwise leak into
  // the next op. A group left by an exception may have enqueued only part
  // of its sends and receives, so the communicator is aborted then: a later
  // op would pair with the wrong peer operations.
  class Group {
   public:
    Group(NcclCommunicator* self, const char* op) : self_(self), op_(op) {
      const ncclResult_t r = ncclGroupStart();
      if (r != ncclSuccess)
        fail(self_->where(), ": ", op_, ": ncclGroupStart() failed: ",
             ncclErrorText(r, self_->comm_));
    }
    void end() {
      open_ = false;
      const ncclResult_t r = ncclGroupEnd();
      if (r != ncclSuccess && r != ncclInProgress)
        fail(self_->where(), ": ", op_, ": ncclGroupEnd() failed: ",
             ncclErrorText(r, self_->comm_));
    }
    ~Group() {
      if (!open_) return;
      ncclGroupEnd();  // already failing; the error that matters is in flight
      self_->abortQuietly(str(op_, ": an NCCL call inside its group failed"));
    }

   private:
    NcclCommunicator* self_;
    const char* op_;
    bool open_ = true;
  };

  std::string where() const {
    return str("rank ", rank(), " of nccl communicator '", name(), "' (size ", size(),
               ", world rank ", globalRanks().at(rank()), ", cuda:", device_, ")");
  }

  // Refuses ops on an aborted communicator, selects our device (another
  // communicator of this thread may have changed it) and checks that every
  // tensor is a contiguous CUDA tensor on that device.
  void prepare(const char* op,
               std::initializer_list<std::pair<const char*, const at::Tensor*>> tensors) {
    if (comm_ == nullptr)
      fail(where(), ": ", op, " on a communicator that was aborted: ", abortReason_);
    for (const auto& [label, t] : tensors) {
      if (!t->defined()) fail(where(), ": ", kBackend, " backend: ", op, ": `", label, "` is undefined");
      if (!t->is_cuda())
        fail(where(), ": ", kBackend, " backend: ", op, " needs CUDA tensors, but `", label,
             "` is on ", t->device());
      if (t->get_device() != device_)
        fail(where(), ": ", kBackend, " backend: ", op, ": `", label, "` is on ", t->device(),
             " but this communicator uses cuda:", device_);
      if (!t->is_contiguous())
        fail(where(), ": ", kBackend, " backend: ", op, ": `", label, "` is not contiguous");
    }
    MOE_CUDA_CHECK(cudaSetDevice(device_));
  }

  void checkSplits(const char* op, const char* label, const std::vector<int64_t>& rows) const {
    MOE_ASSERT_EQ(rows.size(), static_cast<size_t>(size()), where(), ": ", op, " ", label);
    for (int64_t n : rows) MOE_ASSERT(n >= 0, where(), ": ", op, " ", label, " has ", n);
  }

  // Waits for the op just enqueued: first for the non-blocking communicator
  // to finish enqueueing (ncclInProgress), then for the stream. Asynchronous
  // NCCL errors and the timeout abort the communicator, so a rank whose peer
  // died or called another op fails instead of hanging.
  void waitForOp(const char* op) {
    const auto deadline = Clock::now() + timeout_;
    int spins = 0;
    for (;;) {
      ncclResult_t state = ncclSuccess;
      const ncclResult_t q = ncclCommGetAsyncError(comm_, &state);
      if (q != ncclSuccess)
        abortAndFail(str(op, ": ncclCommGetAsyncError failed: ", ncclErrorText(q, comm_)));
      if (state != ncclSuccess && state != ncclInProgress)
        abortAndFail(str(op, ": NCCL reported an asynchronous error: ",
                         ncclErrorText(state, comm_)));
      if (state == ncclSuccess) {
        const cudaError_t e = cudaStreamQuery(stream_);
        if (e == cudaSuccess) return;
        if (e != cudaErrorNotReady)
          abortAndFail(str(op, ": cudaStreamQuery(stream) failed: ", cudaErrorText(e)));
        // Not an error, but CUDA may keep it as the "last error", where torch's
        // launch checks would find it later.
        (void)cudaGetLastError();
      }
      if (Clock::now() > deadline)
        abortAndFail(str(op, " did not complete within ", timeout_.count(),
                         " ms (CommOptions::timeout); a peer may be missing, dead or in "
                         "another op"));
      backoff(spins);
    }
  }

  [[noreturn]] void abortAndFail(const std::string& why) {
    const std::string msg = str(where(), ": ", why);
    abortReason_ = msg;
    const ncclResult_t r = ncclCommAbort(comm_);
    comm_ = nullptr;
    if (r != ncclSuccess)
      fail(msg, "; ncclCommAbort failed too: ", ncclGetErrorString(r));
    fail(msg, "; the communicator was aborted");
  }

  // For paths that are already throwing another error.
  void abortQuietly(const std::string& why) noexcept {
    if (comm_ == nullptr) return;
    try {
      abortReason_ = str(where(), ": ", why);
    } catch (...) {
    }
    ncclCommAbort(comm_);
    comm_ = nullptr;
  }

  // Destructors must not throw: failures are reported on stderr.
  void release(bool graceful) noexcept {
    const std::string who = where();
    if (cudaSetDevice(device_) != cudaSuccess) graceful = false;
    if (comm_ != nullptr) {
      bool finalized = false;
      if (graceful) {
        ncclResult_t r = ncclCommFinalize(comm_);
        if (r == ncclSuccess || r == ncclInProgress) r = awaitComm(comm_, Clock::now() + timeout_);
        if (r == ncclSuccess) {
          r = ncclCommDestroy(comm_);
          finalized = r == ncclSuccess;
        }
        if (!finalized)
          std::cerr << who << ": finalizing the NCCL communicator failed ("
                    << (r == ncclInProgress ? "timeout" : ncclGetErrorString(r))
                    << "); aborting it\n";
      }
      if (!finalized) ncclCommAbort(comm_);
      comm_ = nullptr;
    }
    if (barrierBuf_ != nullptr) cudaFree(barrierBuf_);
    barrierBuf_ = nullptr;
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
    stream_ = nullptr;
  }

  ncclComm_t comm_;  // nullptr once aborted or released
  int device_;
  std::chrono::milliseconds timeout_;
  cudaStream_t stream_ = nullptr;
  void* barrierBuf_ = nullptr;  // one float on device_
  std::string abortReason_;
};

// Result of counting CUDA devices in a child process (see ncclUsableImpl).
struct DeviceProbe {
  bool ok = false;
  int count = 0;
  std::string error;  // why counting failed, when !ok
};

// Counts devices in a forked child so this process never initialises CUDA:
// CUDA does not survive fork(), and the launcher forks ranks from the
// process that asks whether they can run. The child writes "ok <n>" or
// "err <text>" to a pipe.
DeviceProbe probeDevices() {
  DeviceProbe probe;
  int fds[2];
  if (pipe(fds) != 0) {
    probe.error = str("pipe() failed: ", std::strerror(errno));
    return probe;
  }
  const pid_t pid = fork();
  if (pid < 0) {
    probe.error = str("fork() failed: ", std::strerror(errno));
    close(fds[0]);
    close(fds[1]);
    return probe;
  }
  if (pid == 0) {
    close(fds[0]);
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    char buf[512];
    const int len = e == cudaSuccess
                        ? std::snprintf(buf, sizeof(buf), "ok %d", n)
                        : std::snprintf(buf, sizeof(buf), "err %s", cudaGetErrorString(e));
    if (len > 0) (void)!write(fds[1], buf, std::min<size_t>(len, sizeof(buf) - 1));
    _exit(0);
  }
  close(fds[1]);
  std::string reply;
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  bool timedOut = false;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      timedOut = true;
      break;
    }
    pollfd pfd{fds[0], POLLIN, 0};
    const int ready = poll(&pfd, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) {
      timedOut = ready == 0;
      break;
    }
    char buf[256];
    const ssize_t got = read(fds[0], buf, sizeof(buf));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;  // EOF: the child is done
    reply.append(buf, static_cast<size_t>(got));
  }
  close(fds[0]);
  if (timedOut) kill(pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timedOut) {
    probe.error = "cudaGetDeviceCount did not return within 60 s (probe process killed)";
  } else if (reply.rfind("ok ", 0) == 0) {
    probe.ok = true;
    probe.count = std::atoi(reply.c_str() + 3);
  } else if (reply.rfind("err ", 0) == 0) {
    probe.error = str("cudaGetDeviceCount failed: ", reply.substr(4));
  } else {
    probe.error = str("the cudaGetDeviceCount probe process ended without an answer (wait status ",
                      status, ")");
  }
  return probe;
}

std::string gpus(int n) { return n == 1 ? "1 GPU" : str(n, " GPUs"); }

}  // namespace

bool ncclUsableImpl(int worldSize, std::string* reason) {
  // Forked ranks inherit the cached answer and never probe again.
  static const DeviceProbe probe = probeDevices();
  std::string why;
  if (!probe.ok) {
    why = str("nccl backend needs ", gpus(worldSize), "; ", probe.error);
  } else if (probe.count < worldSize) {
    why = str("nccl backend needs ", gpus(worldSize), "; found ", probe.count);
  }
  if (reason != nullptr) *reason = why;
  return why.empty();
}

std::shared_ptr<Communicator> createNcclWorld(std::shared_ptr<store::Store> store, int rank,
                                              int worldSize, const CommOptions& opts) {
  const std::string where = str("rank ", rank, ": creating the nccl world communicator");
  if (store == nullptr) fail(where, ": no store given");
  if (worldSize < 1 || rank < 0 || rank >= worldSize)
    fail(where, ": rank ", rank, " is outside world size ", worldSize);

  const int device = opts.device >= 0 ? opts.device : opts.localRank;
  int count = 0;
  MOE_CUDA_CHECK_AT(where, cudaGetDeviceCount(&count));
  if (device < 0 || device >= count)
    fail(where, ": CUDA device ", device, " (from ",
         opts.device >= 0 ? "CommOptions::device" : "LOCAL_RANK", ") does not exist; found ",
         count, " device(s)");
  MOE_CUDA_CHECK_AT(where, cudaSetDevice(device));

  ncclUniqueId id;
  if (rank == 0) {
    MOE_NCCL_CHECK_AT(where, nullptr, ncclGetUniqueId(&id));
    const auto* bytes = reinterpret_cast<const uint8_t*>(&id);
    store->set(kUniqueIdKey, std::vector<uint8_t>(bytes, bytes + sizeof(id)));
  } else {
    const std::vector<uint8_t> value = store->get(kUniqueIdKey);
    if (value.size() != sizeof(id))
      fail(where, ": store key '", kUniqueIdKey, "' holds ", value.size(),
           " bytes, expected an ncclUniqueId of ", sizeof(id));
    std::memcpy(&id, value.data(), sizeof(id));
  }

  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // lets us bound every wait by opts.timeout
  config.commName = "world";
  ncclComm_t comm = nullptr;
  const ncclResult_t r = ncclCommInitRankConfig(&comm, worldSize, id, rank, &config);
  if (r != ncclSuccess && r != ncclInProgress) {
    const std::string text = ncclErrorText(r, comm);
    if (comm != nullptr) ncclCommAbort(comm);
    fail(where, ": ncclCommInitRankConfig(world size ", worldSize, ", cuda:", device,
         ") failed: ", text);
  }
  awaitCreated(comm, opts.timeout, where, "ncclCommInitRankConfig");

  std::vector<int> globalRanks(worldSize);
  for (int i = 0; i < worldSize; ++i) globalRanks[i] = i;
  auto world = std::make_shared<NcclCommunicator>("world", rank, std::move(globalRanks), device,
                                                  comm, opts.timeout);
  world->setVerify(opts.verify);
  return world;
}

}  // namespace moe::comm
