#pragma once
// The part the gloo and nccl backends share: a Communicator whose do* hooks
// run on a libtorch c10d process group (c10d::ProcessGroupGloo in gloo/,
// c10d::ProcessGroupNCCL in nccl/). Using libtorch's own process groups
// means a rank maps exactly the Gloo and NCCL that libtorch links, never a
// second copy. The Communicator base above it keeps the harness's argument
// checks, fingerprint verification, flight recorder and counters.
//
// How each op maps onto c10d (both backends):
//  - all_reduce: Backend::allreduce with SUM/MAX/MIN in the tensor's dtype
//    (Gloo's and NCCL's bfloat16/float16 sums round after each addition);
//    avg is the sum divided by the group size in the same dtype (integer
//    quotient for int64), since Gloo has no AVG.
//  - broadcast, barrier, send/recv (tag 0: FIFO per pair): the c10d op.
//  - all_gather: equal blocks all_gather_single; uneven blocks (torch.chunk
//    pieces, empty ones included) an all_to_all_single that sends the
//    rank's rows to every member.
//  - reduce_scatter: an all_to_all_single of the blocks followed by a local
//    reduction in rank order, so every backend gives the same, deterministic
//    result for even and uneven blocks ((n-1)/n volume, as a ring).
//  - all_to_all: all_to_all_single with the row splits.
// Every op waits for its Work (under trace verification in slices of
// kVerdictPollMs, looking for the launcher's verdict between them); a failure (peer gone, timeout) becomes a
// HarnessError naming the backend, the op, the group and the global rank.
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "harness/comm/communicator.h"
#include "harness/store/store.h"

namespace c10d {
class Backend;
class Work;
}

namespace moe::comm {

class C10dCommunicator : public Communicator {
 public:
  ~C10dCommunicator() override;

 protected:
  C10dCommunicator(std::string name, int rank, std::vector<int> globalRanks,
                   c10::intrusive_ptr<c10d::Backend> pg, std::shared_ptr<store::Store> store,
                   std::chrono::milliseconds timeout);

  // Throws HarnessError when `t` cannot take part in `op` on this backend
  // (wrong device); called for every tensor of every op.
  virtual void checkTensor(const at::Tensor& t, const char* op) const = 0;
  // Makes this rank's process group for a sub-group: `members` are global
  // ranks, `myIndex` this rank's position among them, `store` a store
  // prefixed for this group alone.
  virtual std::shared_ptr<Communicator> makeChild(const std::string& name, int myIndex,
                                                  std::vector<int> members,
                                                  std::shared_ptr<store::Store> store) = 0;
  // Whether Work::wait(timeout) may be called and retried after it expires
  // (gloo: yes, the work is untouched; nccl: a timed-out wait may abort the
  // communicator, so nccl waits whole and a mismatched member is stopped by
  // the launcher instead).
  virtual bool boundedWaits() const { return false; }
  // Called after each op's Work completed (nccl: waits for the stream, so
  // the output is ready on the host's terms).
  virtual void afterWork() {}

  void doAllReduce(at::Tensor& t, ReduceOp op) override;
  void doBroadcast(at::Tensor& t, int root) override;
  void doBarrier() override;
  void doSend(const at::Tensor& t, int peer) override;
  void doRecv(at::Tensor& t, int peer) override;
  void doAllGather(at::Tensor& out, const at::Tensor& in,
                   const std::vector<int64_t>& rowsPerRank) override;
  void doReduceScatter(at::Tensor& out, const at::Tensor& in, ReduceOp op,
                       const std::vector<int64_t>& rowsPerRank) override;
  void doAllToAll(at::Tensor& out, const at::Tensor& in, const std::vector<int64_t>& outSplits,
                  const std::vector<int64_t>& inSplits) override;
  std::shared_ptr<Communicator> doSplit(const std::string& name,
                                        const std::vector<std::vector<int>>& groups,
                                        int groupIndex) override;

  std::chrono::milliseconds timeout() const { return timeout_; }
  // gloo: after each op, wait until the process group's worker thread has
  // released the op's Work (and its tensors) too.
  void setAwaitWorkRelease(bool on) { awaitWorkRelease_ = on; }
  const c10::intrusive_ptr<c10d::Backend>& processGroup() const { return pg_; }

 private:
  // Runs `start` (which returns the op's Work), waits for it, and turns a
  // failure into a HarnessError naming the op.
  template <typename Start>
  void runWork(const char* op, Start&& start);
  // work.wait(), polling for a trace-verification verdict where one may come.
  void waitForWork(c10d::Work& work);
  void allToAllRows(at::Tensor& out, const at::Tensor& in, const std::vector<int64_t>& outRows,
                    const std::vector<int64_t>& inRows, const char* op);
  void divideBySize(at::Tensor& t);

  c10::intrusive_ptr<c10d::Backend> pg_;
  std::shared_ptr<store::Store> store_;
  std::chrono::milliseconds timeout_;
  bool awaitWorkRelease_ = false;
  bool abandoned_ = false;  // an op was left running when a verdict ended its wait
};

}  // namespace moe::comm
