#include "harness/comm/fingerprint.h"

#include <map>
#include <sstream>

#include "common/error.h"

namespace moe::comm {
namespace {

std::string ranksPhrase(const std::vector<int>& ranks) {
  std::string s = ranks.size() == 1 ? "rank " : "ranks ";
  for (size_t i = 0; i < ranks.size(); ++i) s += (i ? "," : "") + std::to_string(ranks[i]);
  return s;
}

int64_t entry(const std::vector<int64_t>& v, size_t j) { return j < v.size() ? v[j] : 0; }

}  // namespace

std::string describeFingerprint(const Fingerprint& f) {
  const auto op = static_cast<OpType>(f.op);
  std::ostringstream os;
  os << opName(op) << "#" << f.seq;
  if (op == OpType::kBarrier) return os.str();
  os << "(" << dtypeName(f.dtype);
  switch (op) {
    case OpType::kAllReduce:
      os << ", " << reduceOpName(static_cast<ReduceOp>(f.arg)) << ", numel " << f.numelIn;
      break;
    case OpType::kBroadcast:
      os << ", root " << f.arg << ", numel " << f.numelIn;
      break;
    case OpType::kAllGather:
      os << ", output numel " << f.numelOut;
      break;
    case OpType::kReduceScatter:
      os << ", " << reduceOpName(static_cast<ReduceOp>(f.arg)) << ", input numel " << f.numelIn;
      break;
    default:
      break;
  }
  os << ")";
  return os.str();
}

std::string compareFingerprints(const std::string& group, const std::vector<int>& globalRanks,
                                const std::vector<const Fingerprint*>& fps) {
  MOE_ASSERT_EQ(fps.size(), globalRanks.size());
  const int n = static_cast<int>(fps.size());
  // 1. Same op, sequence number and arguments everywhere.
  std::map<std::string, std::vector<int>> byCall;
  std::vector<std::string> order;
  int ref = -1;  // the first known member: the reference for the size checks
  for (int r = 0; r < n; ++r) {
    if (!fps[r]) continue;
    if (ref < 0) ref = r;
    const std::string d = describeFingerprint(*fps[r]);
    if (!byCall.count(d)) order.push_back(d);
    byCall[d].push_back(globalRanks[r]);
  }
  if (byCall.size() > 1) {
    std::string msg = moe::str("collective mismatch on group '", group, "': ");
    for (size_t i = 0; i < order.size(); ++i) msg += (i ? "; " : "") + ranksPhrase(byCall[order[i]]) + " called " + order[i];
    return msg;
  }
  if (ref < 0) return "";
  // 2. Size consistency per op.
  const Fingerprint& p = *fps[ref];
  const auto op = static_cast<OpType>(p.op);
  if (op == OpType::kAllToAll) {
    for (int i = 0; i < n; ++i) {
      for (int j = 0; j < n; ++j) {
        if (!fps[i] || !fps[j]) continue;
        const int64_t sends = entry(fps[i]->to, j), expects = entry(fps[j]->from, i);
        if (sends != expects)
          return moe::str("collective mismatch: all_to_all#", p.seq, " split sizes disagree on group '", group,
                          "': rank ", globalRanks[i], " sends ", sends, " elements to rank ", globalRanks[j],
                          ", but rank ", globalRanks[j], " expects ", expects, " from rank ", globalRanks[i]);
      }
    }
  } else if (op == OpType::kAllGather || op == OpType::kReduceScatter) {
    // Every member must agree on the per-rank element counts, and its own
    // contribution (gather: input, scatter: output) must match its entry.
    for (int r = 0; r < n; ++r) {
      if (!fps[r]) continue;
      for (int j = 0; j < n; ++j) {
        if (entry(fps[r]->to, j) != entry(p.to, j))
          return moe::str("collective mismatch: ", opName(op), "#", p.seq, " on group '", group, "': rank ",
                          globalRanks[r], " expects ", entry(fps[r]->to, j), " elements for rank ", globalRanks[j],
                          ", rank ", globalRanks[ref], " expects ", entry(p.to, j));
      }
      const int64_t own = op == OpType::kAllGather ? fps[r]->numelIn : fps[r]->numelOut;
      if (own != entry(p.to, r))
        return moe::str("collective mismatch: ", opName(op), "#", p.seq, " on group '", group, "': rank ",
                        globalRanks[r], " passes ", own, " elements but the agreed size for it is ", entry(p.to, r));
    }
  }
  return "";
}

}  // namespace moe::comm
