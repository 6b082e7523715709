#include "harness/comm/c10d_communicator.h"

#include <torch/csrc/distributed/c10d/Backend.hpp>

#include <algorithm>
#include <thread>

namespace moe::comm {

C10dCommunicator::C10dCommunicator(std::string name, int rank, std::vector<int> globalRanks,
                                   c10::intrusive_ptr<c10d::Backend> pg,
                                   std::shared_ptr<store::Store> store,
                                   std::chrono::milliseconds timeout)
    : Communicator(std::move(name), rank, std::move(globalRanks)),
      pg_(std::move(pg)),
      store_(std::move(store)),
      timeout_(timeout) {}

void C10dCommunicator::waitForWork(c10d::Work& work) {
  if (!pollsVerdict() || !boundedWaits()) {
    work.wait();
    return;
  }
  // Trace verification (communicator.h): a member of a mismatched
  // collective may wait forever, so the wait looks for the launcher's
  // verdict between bounded waits. Work::wait with a timeout throws when it
  // expires; the work is then still running and untouched.
  while (true) {
    try {
      work.wait(std::chrono::milliseconds(kVerdictPollMs));
      return;
    } catch (const c10::Error&) {
      if (work.isCompleted()) break;  // a failure of the op itself: rethrown below
    }
    try {
      throwIfVerdict();
    } catch (const CollectiveMismatch&) {
      abandoned_ = true;  // the op never finishes: see ~C10dCommunicator
      throw;
    }
  }
  work.wait();
}

C10dCommunicator::~C10dCommunicator() {
  // An abandoned op still occupies the process group's worker thread (until
  // the backend's timeout), and destroying the group joins that thread: the
  // rank would hang on its way out after reporting the mismatch. The group
  // is left to the process's exit instead.
  if (abandoned_) (void)pg_.release();
}

template <typename Start>
void C10dCommunicator::runWork(const char* op, Start&& start) {
  try {
    c10::intrusive_ptr<c10d::Work> work = start();
    waitForWork(*work);
    afterWork();
    if (awaitWorkRelease_) {
      // ProcessGroupGloo's worker thread drops its reference to the work
      // (and so to the op's tensors) just after marking it complete. Wait
      // for that, so no tensor of a finished op outlives the call: the
      // memory checks count what a rank holds right after a step.
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
      while (work.use_count() > 1 && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
    }
  } catch (const HarnessError&) {
    throw;
  } catch (const c10::Error& e) {
    std::string what = e.what_without_backtrace();
    fail(backendName(), " ", op, " on group '", name(), "' (global rank ", globalRanks()[rank()],
         ") failed: ", what.substr(0, what.find('\n')));
  } catch (const std::exception& e) {
    std::string what = e.what();
    fail(backendName(), " ", op, " on group '", name(), "' (global rank ", globalRanks()[rank()],
         ") failed: ", what.substr(0, what.find('\n')));
  }
}

void C10dCommunicator::divideBySize(at::Tensor& t) {
  if (t.scalar_type() == at::kLong) t.div_(size(), "trunc");
  else t.div_(size());
}

void C10dCommunicator::doAllReduce(at::Tensor& t, ReduceOp op) {
  checkTensor(t, "all_reduce");
  c10d::AllreduceOptions o;
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg: o.reduceOp = c10d::ReduceOp::SUM; break;
    case ReduceOp::kMax: o.reduceOp = c10d::ReduceOp::MAX; break;
    case ReduceOp::kMin: o.reduceOp = c10d::ReduceOp::MIN; break;
  }
  std::vector<at::Tensor> ts{t};
  runWork("all_reduce", [&] { return pg_->allreduce(ts, o); });
  if (op == ReduceOp::kAvg) divideBySize(t);
}

void C10dCommunicator::doBroadcast(at::Tensor& t, int root) {
  checkTensor(t, "broadcast");
  if (t.numel() == 0) return;  // every member has numel 0 (verified counts)
  c10d::BroadcastOptions o;
  o.rootRank = root;
  std::vector<at::Tensor> ts{t};
  runWork("broadcast", [&] { return pg_->broadcast(ts, o); });
}

void C10dCommunicator::doBarrier() {
  c10d::BarrierOptions o;
  // nccl's barrier runs on the rank's GPU; gloo's (even on a CUDA lane) on the host.
  if (device().is_cuda() && backendName() == "nccl") o.device_ids = {device().index()};
  runWork("barrier", [&] { return pg_->barrier(o); });
}

void C10dCommunicator::doSend(const at::Tensor& t, int peer) {
  checkTensor(t, "send");
  if (t.numel() == 0) return;
  std::vector<at::Tensor> ts{t};
  runWork("send", [&] { return pg_->send(ts, peer, /*tag=*/0); });
}

void C10dCommunicator::doRecv(at::Tensor& t, int peer) {
  checkTensor(t, "recv");
  if (t.numel() == 0) return;
  std::vector<at::Tensor> ts{t};
  runWork("recv", [&] { return pg_->recv(ts, peer, /*tag=*/0); });
}

void C10dCommunicator::doAllGather(at::Tensor& out, const at::Tensor& in,
                                   const std::vector<int64_t>& rows) {
  checkTensor(in, "all_gather");
  checkTensor(out, "all_gather");
  if (out.numel() == 0) return;
  const bool equal = std::all_of(rows.begin(), rows.end(), [&](int64_t r) { return r == rows.front(); });
  if (equal) {
    at::Tensor input = in;
    runWork("all_gather", [&] { return pg_->all_gather_single(out, input, c10d::AllgatherOptions()); });
    return;
  }
  // Uneven: every member receives rows[r] rows from rank r and sends its own
  // rows to everyone.
  const int n = size();
  std::vector<int64_t> reps(in.dim(), 1);
  reps[0] = n;
  at::Tensor repeated = in.repeat(reps);
  allToAllRows(out, repeated, rows, std::vector<int64_t>(n, in.size(0)), "all_gather");
}

void C10dCommunicator::doReduceScatter(at::Tensor& out, const at::Tensor& in, ReduceOp op,
                                       const std::vector<int64_t>& rows) {
  checkTensor(in, "reduce_scatter");
  checkTensor(out, "reduce_scatter");
  const int n = size();
  const int64_t mine = rows[rank()];
  std::vector<int64_t> shape = in.sizes().vec();
  shape[0] = mine * n;
  at::Tensor blocks = at::empty(shape, in.options());
  allToAllRows(blocks, in, std::vector<int64_t>(n, mine), rows, "reduce_scatter");
  // Local reduction in rank order, in the tensor's dtype.
  if (mine == 0) return;
  out.copy_(blocks.narrow(0, 0, mine));
  for (int i = 1; i < n; ++i) out.add_(blocks.narrow(0, i * mine, mine));
  if (op == ReduceOp::kAvg) divideBySize(out);
}

void C10dCommunicator::doAllToAll(at::Tensor& out, const at::Tensor& in,
                                  const std::vector<int64_t>& outSplits,
                                  const std::vector<int64_t>& inSplits) {
  checkTensor(in, "all_to_all");
  checkTensor(out, "all_to_all");
  allToAllRows(out, in, outSplits, inSplits, "all_to_all");
}

void C10dCommunicator::allToAllRows(at::Tensor& out, const at::Tensor& in,
                                    const std::vector<int64_t>& outRows,
                                    const std::vector<int64_t>& inRows, const char* op) {
  std::vector<int64_t> outCounts = outRows, inCounts = inRows;
  at::Tensor input = in;
  runWork(op, [&] {
    return pg_->all_to_all_single(out, input, outCounts, inCounts, c10d::AllToAllOptions());
  });
}

std::shared_ptr<Communicator> C10dCommunicator::doSplit(const std::string& name,
                                                        const std::vector<std::vector<int>>& groups,
                                                        int groupIndex) {
  if (groupIndex < 0) return nullptr;
  const auto& members = groups[groupIndex];
  const int myIndex = static_cast<int>(std::find(members.begin(), members.end(), rank()) - members.begin());
  std::vector<int> global;
  for (int r : members) global.push_back(globalRanks()[r]);
  // Each group of the partition rendezvous under its own prefix.
  auto groupStore = store::prefixed(store_, backendName() + "/" + name + "/" + std::to_string(groupIndex));
  try {
    auto child = makeChild(name, myIndex, std::move(global), groupStore);
    child->setVerify(verifying());
    return child;
  } catch (const HarnessError&) {
    throw;
  } catch (const std::exception& e) {
    std::string what = e.what();
    fail(backendName(), ": global rank ", globalRanks()[rank()], " could not connect group '", name, "': ",
         what.substr(0, what.find('\n')));
  }
}

}  // namespace moe::comm
