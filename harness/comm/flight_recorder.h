#pragma once
// Flight recorder: every collective of a rank, in a bounded ring buffer.
//
// The ring lives in a memory-mapped file when MOE_HARNESS_TRACE_DIR is set
// (the launcher sets it): the file `rank{R}.trace` is updated in place at
// each state change of each call, so the launcher can read every rank's
// state at any moment — after a crash (the process is gone), on timeout (the
// process is stuck) or on request — without the rank's cooperation.
// Without the variable the ring is in ordinary memory.
//
// Counters: calls, logical bytes and seconds per (group, op), readable by
// code. Logical bytes are those of the bandwidth-optimal (ring) algorithm,
// independent of how a backend moves them, so callers can assert them
// against analytical formulas (B = payload bytes, n = group size):
//   all_reduce     sent = recv = 2(n-1)/n * B
//   all_gather     sent = recv = B_out - B_in   (= (n-1)/n * B_out when even)
//   reduce_scatter sent = recv = B_in - B_out   (= (n-1)/n * B_in when even)
//   all_to_all     sent = rows sent to other ranks, recv = rows received
//   broadcast      root: sent = B; others: recv = B
//   send / recv    B on the sender / receiver; barrier 0.
// The verification exchange (fingerprints) is not counted.
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "harness/comm/types.h"

namespace moe::comm {

enum class CallState : int32_t { kEmpty = 0, kVerifying = 1, kRunning = 2, kCompleted = 3, kFailed = 4 };
const char* callStateName(CallState s);

// One collective call. Plain data: it is stored as-is in the trace file.
struct TraceRecord {
  uint64_t id = 0;   // 1-based index of the call in this process (0 = empty)
  uint64_t seq = 0;  // per-group sequence number (p2p: per-peer counter)
  int32_t op = 0;    // OpType
  int32_t state = 0; // CallState
  int32_t dtype = -1;  // c10::ScalarType
  int32_t arg = -1;    // root (broadcast), peer (send/recv), ReduceOp (reductions)
  int32_t groupSize = 0;
  int32_t pad = 0;
  int64_t bytesSent = 0;
  int64_t bytesRecv = 0;
  double tStart = 0;  // seconds since the epoch
  double tEnd = 0;
  char group[40] = {};
  char ranks[56] = {};   // global ranks of the group, "0,1,2,3" (truncated)
  char shapes[64] = {};  // "in [4, 8] -> out [16, 8]"
  char splits[96] = {};  // all_to_all / uneven rows: "in 1,0,3 out 2,2,0"
  char error[120] = {};  // first line of the error on kFailed
};

struct TraceFileHeader {
  char magic[8];
  uint32_t version;
  int32_t rank;
  int32_t worldSize;
  int32_t pid;
  uint32_t capacity;
  uint32_t pad;
  uint64_t count;  // records written so far (atomic in the writer)
  char host[64];
};

// Logical bytes one rank sends for a collective of `payloadBytes` over a
// group of n ranks, as this recorder counts them: all_reduce 2(n-1)/n * B;
// all_gather / reduce_scatter (n-1)/n * B (B = the full, gathered size);
// broadcast B on the root; 0 for n == 1.
int64_t ringBytesSent(comm::OpType op, int64_t payloadBytes, int groupSize, bool isRoot = false);

struct OpCounter {
  int64_t calls = 0;
  int64_t bytesSent = 0;
  int64_t bytesRecv = 0;
  double seconds = 0;
};

class FlightRecorder {
 public:
  static FlightRecorder& instance();

  // Sets rank identity and starts an empty ring: in the trace file
  // `traceDir`/rank{R}.trace, or with traceDir "" in $MOE_HARNESS_TRACE_DIR
  // when set, else (or with traceDir "-") in memory. Safe to call again.
  void configure(int rank, int worldSize, const std::string& traceDir = "");
  int rank() const { return rank_; }

  // Starts a call record and returns its slot; the caller fills `rec`.
  TraceRecord* begin(const TraceRecord& rec);
  void setState(TraceRecord* slot, CallState s, const std::string& error = "");

  std::vector<TraceRecord> snapshot() const;  // oldest first
  nlohmann::json toJson() const;

  // Counters keyed by (group name, op).
  std::map<std::pair<std::string, OpType>, OpCounter> counters() const;
  OpCounter counter(const std::string& group, OpType op) const;
  void resetCounters();
  void count(const std::string& group, OpType op, int64_t sent, int64_t recv, double seconds);

  ~FlightRecorder();

 private:
  FlightRecorder();
  void unmap();

  int rank_ = 0;
  int worldSize_ = 1;
  TraceFileHeader* header_ = nullptr;
  TraceRecord* ring_ = nullptr;
  size_t mappedBytes_ = 0;
  std::vector<uint8_t> memory_;  // backing store when not file-mapped
  mutable std::mutex mu_;
  std::map<std::pair<std::string, OpType>, OpCounter> counters_;
};

// --- reading traces of other processes (launcher side) -------------------
struct RankTrace {
  int rank = -1;
  int pid = 0;
  std::string host;
  std::vector<TraceRecord> records;  // oldest first
  std::string error;                 // non-empty when the file was unreadable
};

RankTrace readTraceFile(const std::string& path);
// Reads rank{r}.trace for r in [0, worldSize); missing files give an entry
// with `error` set.
std::vector<RankTrace> readTraceDir(const std::string& dir, int worldSize);

nlohmann::json traceToJson(const RankTrace& t);
std::string describeRecord(const TraceRecord& r);  // "all_gather#7 on group ep [running]"
// A per-rank table of the last `lastN` collectives of each rank.
std::string formatTraceTable(const std::vector<RankTrace>& traces, int lastN = 4);
// One sentence on where the ranks diverge, e.g. "rank 2 is in all_gather#7
// on group ep; ranks 0,1,3 are in all_to_all#7 on group ep", or "" when all
// ranks' last calls agree.
std::string diagnoseDivergence(const std::vector<RankTrace>& traces);
// Proof of a collective deadlock, from a snapshot of the traces: every rank
// that has not exited (`exited[r]`, indexed like traces) is inside a
// collective (verifying or running), at least one is, and no such call has
// every member of its group (the record's global ranks) inside that same
// call (group name, members, op, sequence number): no call can complete.
// Synchronous collectives then wait forever, so this is a desync, not
// slowness. Returns one sentence naming what each set of ranks is blocked
// in, or "" when it is not proven (a live rank outside a collective, an
// unreadable trace, a member list truncated in the record, a send or recv).
std::string diagnoseDeadlock(const std::vector<RankTrace>& traces, const std::vector<bool>& exited);

}  // namespace moe::comm
