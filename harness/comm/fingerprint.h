#pragma once
// What the members of a group must agree on for one collective, and the one
// comparison both verification modes use (communicator.h):
//  - in-band: the members exchange their fingerprints before the collective
//    (an all_gather on the backend) and each compares them;
//  - trace: each rank's flight recorder holds the fingerprint in the call's
//    TraceRecord, and the launcher compares the records of the same
//    (group, sequence number) across the group's members
//    (trace_verifier.h).
// Plain data, no tensors: the launcher links no backend.
#include <cstdint>
#include <string>
#include <vector>

#include "harness/comm/types.h"

namespace moe::comm {

struct Fingerprint {
  uint64_t seq = 0;     // per-group sequence number
  int32_t op = 0;       // OpType
  int32_t dtype = -1;   // c10::ScalarType, -1 for barrier
  int32_t arg = -1;     // root (broadcast), ReduceOp (reductions), else -1
  int64_t numelIn = 0;  // elements of the input (all_reduce/broadcast: of the tensor)
  int64_t numelOut = 0;
  // Per group rank j, in elements: all_gather / reduce_scatter: rank j's
  // block (every member must agree); all_to_all: what this rank sends to j.
  std::vector<int64_t> to;
  // all_to_all: elements this rank receives from rank j; else empty.
  std::vector<int64_t> from;
};

// "all_reduce#7(float32, sum, numel 16)": the fields every member must
// agree on (a rank's own all_to_all splits are compared separately).
std::string describeFingerprint(const Fingerprint& f);

// Compares the fingerprints of one collective of group `group`.
// fps[j] is group rank j's fingerprint, nullptr when it is not known (the
// launcher has not seen that member's call yet: such members are neither
// compared nor named). globalRanks[j] names group rank j in messages.
// Returns "" when the known fingerprints agree, else the mismatch message
// that CollectiveMismatch carries, naming every call and its ranks:
//   "collective mismatch on group 'world': rank 1 called all_gather#2(float32,
//    output numel 64); ranks 0,2,3 called all_reduce#2(float32, sum, numel 16)"
// or, for consistent calls with inconsistent sizes,
//   "collective mismatch: all_to_all#2 split sizes disagree on group 'ep':
//    rank 2 sends 6 elements to rank 0, but rank 0 expects 3 from rank 2".
std::string compareFingerprints(const std::string& group, const std::vector<int>& globalRanks,
                                const std::vector<const Fingerprint*>& fps);

}  // namespace moe::comm
