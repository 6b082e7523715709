#pragma once
// Communicator: the one seam between the harness and a collective library.
//
// Contract (all backends):
//  - Every collective is called by every member of the group, in the same
//    order, with matching arguments (same op, dtype, element counts; for
//    all-to-all, what rank i sends to j is what j expects from i).
//  - Tensors must be contiguous and live on device() (CPU, or the rank's
//    GPU: always for nccl, for gloo when created with device type "cuda").
//    Ops are synchronous: when a call returns, the
//    output is ready to read.
//  - Reductions run in the tensor's dtype (see ReduceOp in types.h).
//  - Supported dtypes: float32, bfloat16, float16, float64, int64. Anything
//    else throws HarnessError naming the backend, op and dtype.
//  - An op a backend lacks throws HarnessError naming backend and op.
//  - Verification (on by default; MOE_HARNESS_VERIFY=0 turns it off): the
//    members' fingerprints (fingerprint.h: op, dtype, numel, per-group
//    sequence number, root, per-rank sizes) are compared, and a mismatch
//    throws CollectiveMismatch on every member naming every call and its
//    ranks. Two modes (verifyMode()):
//    * in-band (the default; MOE_HARNESS_VERIFY unset or 1): the members
//      exchange fingerprints before each collective (one extra all_gather)
//      and only run it when they agree: mismatched buffers are never
//      reduced. Works anywhere (multi-host, torchrun, srun).
//    * trace (MOE_HARNESS_VERIFY=trace, set by our launcher for the ranks it
//      supervises on this host, trace_verifier.h): no exchange; each call's
//      fingerprint goes into the rank's memory-mapped flight record and the
//      launcher compares the members' records while they run. On a
//      mismatch it posts a verdict that every member raises as
//      CollectiveMismatch: from the collective it waits in (the wait polls
//      the verdict every kVerdictPollMs), at its next collective, or before
//      it exits (settleVerification). The mismatched collective may already
//      have run (reduced mismatched buffers, or failed in the backend: that
//      error is replaced by the verdict when one arrives within
//      kVerdictGraceMs). Groups larger than kTraceMaxRanks, and send/recv
//      (whose fingerprint always rides in-band), stay in-band. The launcher
//      stops members that do not report within its failure grace and
//      attributes the mismatch to each of them (launcher.h).
//  - Every op is recorded in the process-wide FlightRecorder and counted in
//    CommStats (logical bytes, see flight_recorder.h).
//
// Backends implement the protected do* hooks; the public methods own
// argument validation, verification and recording, so every backend gets
// them identically.
#include <ATen/ATen.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/error.h"
#include "harness/comm/types.h"

namespace moe::comm {

// Raised (on every member of the group) when the members called different
// collectives or passed inconsistent sizes.
class CollectiveMismatch : public HarnessError {
 public:
  using HarnessError::HarnessError;
};

// Trace verification: how often a waiting collective looks for a verdict,
// and how long a collective whose backend failed waits for one (the
// launcher compares every ~20 ms and waits up to 100 ms for the members).
inline constexpr int kVerdictPollMs = 20;
inline constexpr int kVerdictGraceMs = 500;

// Before a rank that ran collectives exits on its own: under trace
// verification waits (at most `boundSeconds`) for the launcher to verify
// its calls, and returns the verdict when there is a mismatch ("" when
// there is none or no launcher watches). Rank programs call it before
// reporting success (moe-harness's command line and launchLocal do).
std::string settleVerification(double boundSeconds = 1.0);

class Communicator : public std::enable_shared_from_this<Communicator> {
 public:
  virtual ~Communicator() = default;

  int rank() const { return rank_; }  // rank within this group
  int size() const { return static_cast<int>(globalRanks_.size()); }
  const std::string& name() const { return name_; }
  // Global (world) rank of each member, indexed by group rank.
  const std::vector<int>& globalRanks() const { return globalRanks_; }
  virtual std::string backendName() const = 0;
  bool verifying() const { return mode_ != VerifyMode::kOff; }
  VerifyMode verifyMode() const { return mode_; }
  // The device every tensor given to this communicator must live on (the
  // run's device lane): CPU, or the rank's GPU (nccl; gloo created with
  // device type "cuda"). Callers allocate collective buffers here and copy
  // results to the host explicitly; the verification exchange uses it too.
  virtual at::Device device() const { return at::kCPU; }
  // On: the mode MOE_HARNESS_VERIFY selects for this group (trace only when
  // it says trace, the flight recorder is file-backed and the group has at
  // most kTraceMaxRanks members; else in-band). Off: no verification.
  void setVerify(bool on);

  // t: any shape; reduced in place over the group.
  void allReduce(at::Tensor& t, ReduceOp op = ReduceOp::kSum);
  // t: any shape; overwritten on every rank with root's values.
  void broadcast(at::Tensor& t, int root);
  void barrier();
  // Point-to-point; `peer` is a group rank. Shapes/dtypes must match.
  void send(const at::Tensor& t, int peer);
  void recv(at::Tensor& t, int peer);

  // Gathers every rank's `in` along dim 0 into `out`, in rank order.
  // in:  [n_r, ...]   out: [sum_r n_r, ...]
  // With `rowsPerRank` empty every rank contributes the same n_r = in.size(0)
  // (NCCL's contract). Otherwise rowsPerRank[r] is rank r's row count, so
  // sizes not divisible by the group size (torch.chunk splits, empty pieces
  // included) are allowed.
  void allGather(at::Tensor& out, const at::Tensor& in,
                 const std::vector<int64_t>& rowsPerRank = {});

  // Reduces `in` over the group and leaves rank r with rows block r.
  // in:  [sum_r n_r, ...]   out: [n_rank, ...]
  // With `rowsPerRank` empty, in.size(0) must be size() * out.size(0).
  void reduceScatter(at::Tensor& out, const at::Tensor& in,
                     ReduceOp op = ReduceOp::kSum,
                     const std::vector<int64_t>& rowsPerRank = {});

  // Sends rows [off_j, off_j + inSplits[j]) of `in` to rank j and receives
  // outSplits[i] rows from rank i into `out`, in rank order. Splits are row
  // counts along dim 0 (zeros allowed); empty split vectors mean equal splits.
  // in: [sum(inSplits), ...]   out: [sum(outSplits), ...]
  void allToAllSingle(at::Tensor& out, const at::Tensor& in,
                      const std::vector<int64_t>& outSplits,
                      const std::vector<int64_t>& inSplits);

  // Collective over this communicator: every member calls it with the same
  // arguments. `groups` is a set of disjoint rank lists (ranks of this
  // communicator); returns the sub-communicator of the group containing this
  // rank, or nullptr if it is in none. Cached by name: calling again with the
  // same name and groups returns the same object; different groups under one
  // name is an error.
  std::shared_ptr<Communicator> split(const std::string& name,
                                      const std::vector<std::vector<int>>& groups);
  // split() with a single group; nullptr on non-members.
  std::shared_ptr<Communicator> subgroup(const std::string& name,
                                         const std::vector<int>& ranks);

 protected:
  Communicator(std::string name, int rank, std::vector<int> globalRanks);

  virtual void doAllReduce(at::Tensor& t, ReduceOp op) = 0;
  virtual void doBroadcast(at::Tensor& t, int root) = 0;
  virtual void doBarrier() = 0;
  virtual void doSend(const at::Tensor& t, int peer) = 0;
  virtual void doRecv(at::Tensor& t, int peer) = 0;
  // Arguments are already validated; rowsPerRank is always filled in.
  virtual void doAllGather(at::Tensor& out, const at::Tensor& in,
                           const std::vector<int64_t>& rowsPerRank) = 0;
  virtual void doReduceScatter(at::Tensor& out, const at::Tensor& in, ReduceOp op,
                               const std::vector<int64_t>& rowsPerRank) = 0;
  virtual void doAllToAll(at::Tensor& out, const at::Tensor& in,
                          const std::vector<int64_t>& outSplits,
                          const std::vector<int64_t>& inSplits) = 0;
  // Creates the sub-communicator for `members` (ranks of this communicator,
  // this rank among them) named `name`. Called on every rank of this
  // communicator with the full partition (groupIndex = -1 on non-members),
  // so backends whose split is collective (ncclCommSplit) can use it.
  virtual std::shared_ptr<Communicator> doSplit(
      const std::string& name, const std::vector<std::vector<int>>& groups,
      int groupIndex) = 0;

  // Throws HarnessError naming this backend, `op` and the dtype when the
  // dtype is not supported.
  void checkDtype(const at::Tensor& t, const char* op) const;
  // Shared argument checks of the row-based ops (all_gather, reduce_scatter,
  // all_to_all): contiguous, supported and equal dtypes, same trailing dims.
  void checkRowOp(const char* op, const at::Tensor& out, const at::Tensor& in) const;
  // Shared argument checks of send/recv: contiguous, supported dtype, valid peer.
  void checkP2p(const char* op, const at::Tensor& t, int peer) const;
  // Trace verification (see the contract): whether a backend's wait must
  // poll for the launcher's verdict, and the check it polls with (throws
  // CollectiveMismatch when a verdict is posted).
  bool pollsVerdict() const { return mode_ == VerifyMode::kTrace; }
  void throwIfVerdict() const;

 private:
  struct Call;  // one collective in flight (defined in communicator.cpp)
  void verifyFingerprint(const Call& call);
  template <typename Fn>
  void run(Call& call, Fn&& fn);

  std::string name_;
  int rank_;
  std::vector<int> globalRanks_;
  std::string ranksText_;  // "0,1,2,3": recorded with every call, built once
  VerifyMode mode_;
  uint64_t groupHash_ = 0;  // of globalRanks_: recorded for trace verification
  uint64_t seq_ = 0;  // per-group sequence number of the next collective
  std::map<std::string, std::pair<std::vector<std::vector<int>>,
                                  std::shared_ptr<Communicator>>> children_;
};

}  // namespace moe::comm
