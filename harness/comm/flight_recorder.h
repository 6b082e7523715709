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
//
// Trace verification (communicator.h, trace_verifier.h): each record also
// holds the call's fingerprint (numel, per-rank sizes), and the header has
// words the launcher writes while it watches the file: how far it has read
// (`watched`) and verified (`verified`), and the verdict of a mismatch. While
// a launcher watches, a rank never runs more than kTraceSlack calls ahead of
// what it has read, so the ring never overwrites a call before it is compared.
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
  int32_t groupRank = 0;  // this rank's index in the group
  int64_t bytesSent = 0;
  int64_t bytesRecv = 0;
  double tStart = 0;  // seconds since the epoch
  double tEnd = 0;
  char group[40] = {};
  char ranks[56] = {};   // global ranks of the group, "0,1,2,3" (truncated)
  char shapes[64] = {};  // "in [4, 8] -> out [16, 8]"
  char splits[96] = {};  // all_to_all / uneven rows: "in 1,0,3 out 2,2,0"
  char error[120] = {};  // first line of the error on kFailed
  // The fingerprint (fingerprint.h), for trace verification.
  int64_t numelIn = 0;
  int64_t numelOut = 0;
  uint64_t groupHash = 0;  // of the group's global ranks, in order: tells sibling groups of one name apart
  int32_t verify = 0;      // VerifyMode (communicator.h) the call ran under
  int32_t nSplits = 0;     // valid entries of to/from (0 when the group has more than kTraceMaxRanks)
  int64_t to[16] = {};     // Fingerprint::to
  int64_t from[16] = {};   // Fingerprint::from
};
// The largest group whose per-rank sizes fit a record: larger groups verify in-band.
inline constexpr int kTraceMaxRanks = 16;

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
  // Written by the launcher that watches this file (trace verification).
  uint32_t watcher;        // 1 once a launcher reads this file for verification
  uint32_t verdictPosted;  // 1 once `verdict` holds a mismatch of this job
  uint64_t watched;        // the id of the last record the launcher has read
  uint64_t verified;       // every record up to this id is verified
  char verdict[1024];      // the CollectiveMismatch message, NUL-terminated
  uint64_t epoch;          // set by each configure(): a reader that sees it change starts over
};
// A rank waits in FlightRecorder::begin while it is this many calls ahead
// of what the watching launcher has read.
inline constexpr uint32_t kTraceSlack = 240;

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
  // when set, else (or with traceDir "-") in memory. Safe to call again
  // (a watching launcher is first given up to 1 s to read the old ring).
  void configure(int rank, int worldSize, const std::string& traceDir = "");
  int rank() const { return rank_; }

  // Starts a call record and returns its slot; the caller fills `rec`.
  TraceRecord* begin(const TraceRecord& rec);
  void setState(TraceRecord* slot, CallState s, const std::string& error = "");

  // Whether the ring is in a trace file (MOE_HARNESS_TRACE_DIR).
  bool fileBacked() const { return mappedBytes_ != 0; }
  // The verdict a watching launcher posted for this job ("" none).
  std::string verdict() const;
  // Before a rank exits: when a launcher watches, waits (at most `bound`)
  // until it has verified every call of this rank or posted a verdict. With
  // a verdict, the last completed call is marked failed with it, and the
  // verdict is returned ("" otherwise), so a rank whose mismatched call
  // completed still reports the mismatch.
  std::string settleVerification(double boundSeconds);
  // Marks the newest record failed with `error` when it is still in flight
  // (verifying or running). Gives up rather than block when the recorder is
  // busy: it is called from a terminate handler.
  void failInFlight(const std::string& error);

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
