#pragma once
// Root-cause attribution of a failed job (issue 17 point 2).
//
// When one rank fails, its peers usually fail too, because of it: their
// collectives see a closed connection, their store waits time out, the
// launcher tears them down. The reason of a failed job is the error of the
// rank that failed first *on its own* (a primary failure); the errors a rank
// raises because a peer died are secondary and never chosen while a primary
// failure exists.
//
// Contract:
//  - A rank program that catches its fatal error calls recordRankFailure()
//    (moe-harness's main does, and so does launchLocal): it writes
//    <MOE_HARNESS_TRACE_DIR>/rank<R>.failure.json with the rank, the kind
//    (user_error | internal_error), the message and the wall-clock time.
//  - classifyError() names the secondary class of a message, or "" when the
//    message is not one a rank raises because of a peer. A user error never
//    matches: the patterns are transport and store failures only.
//  - attributeFailures() orders the failed ranks: primary-class failures by
//    time (earliest first, the root cause), then the secondary ones.
//
// Classes. Primary: user_error, internal_error (a recorded error that is not
// secondary), crash (killed by a signal the launcher did not send), exit (a
// non-zero exit without a recorded error). Secondary: peer_gone (a
// connection closed, reset or refused by a peer), aborted (a process group
// or communicator aborted), store_timeout (a store wait or socket timed
// out), peer_timeout (a collective timed out waiting for a peer), stopped
// (killed by the launcher's teardown without an error of its own).
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace moe::launch {

// The environment variable naming the per-job directory of the traces and
// failure records (set by the launcher).
inline constexpr const char* kTraceDirEnv = "MOE_HARNESS_TRACE_DIR";

// Seconds since the epoch (wall clock): the time stamps of failure records
// and of the launcher's own events, comparable across processes.
double wallNow();

// The secondary class of an error message ("peer_gone", "aborted",
// "store_timeout", "peer_timeout"), or "" when it is not secondary.
std::string classifyError(const std::string& message);
bool isSecondaryClass(const std::string& cls);

// Called by a rank on its fatal error; `kind` is "user_error" or
// "internal_error". Does nothing outside a launched job (no trace directory
// or no RANK). Never throws.
void recordRankFailure(const std::string& kind, const std::string& message);

struct RankFailureRecord {
  int rank = -1;
  std::string kind;
  std::string message;
  double time = 0;  // wall clock, seconds since the epoch
};
// The record rank `rank` wrote in `traceDir`, if any.
std::optional<RankFailureRecord> readRankFailureRecord(const std::string& traceDir, int rank);
// Removes rank<r>.failure.json for r < worldSize (a reused trace directory
// must not carry an earlier job's records).
void clearRankFailureRecords(const std::string& traceDir, int worldSize);

struct RankFailure {
  int rank = -1;
  std::string cls;    // see the classes above
  std::string error;  // the rank's own message, or how it ended ("killed by signal 6 (SIGABRT)")
  double time = 0;    // wall clock, seconds since the epoch: when the rank failed
  bool secondary() const { return isSecondaryClass(cls); }
  nlohmann::json toJson() const;  // {"rank", "class", "error", "time"}
};

struct FailureAttribution {
  // Primary-class failures, earliest first: primary[0] is the root cause.
  std::vector<RankFailure> primary;
  // Secondary failures, earliest first.
  std::vector<RankFailure> secondary;
  bool empty() const { return primary.empty() && secondary.empty(); }
  // The failure the job is reported by: the earliest primary one; without
  // any, the earliest secondary one that is not "stopped", else the first.
  // nullptr when empty.
  const RankFailure* root() const;
  // {"primary": {...}, "other_primary": [...], "secondary": [...]}; the root
  // is "primary" even when it is secondary-class (then other lists hold the
  // rest). {} when empty.
  nlohmann::json toJson() const;
  // The summary lines after the first: the root's error, the other primary
  // failures, and the secondary ones in one line.
  std::string describe(double jobStart) const;
};

FailureAttribution attributeFailures(std::vector<RankFailure> failures);

}  // namespace moe::launch
