#pragma once
// Trace verification, the launcher's side (communicator.h "Verification").
//
// The launcher that supervises every rank of a job on this host reads the
// ranks' flight-recorder files (flight_recorder.h) while they run, matches
// the calls of one collective across the members of its group by (group
// name, group hash, sequence number) and compares their fingerprints with
// compareFingerprints (fingerprint.h), the same comparison the in-band
// exchange runs. The ranks pay no round trip: they only write their records.
//
// Contract:
//  - poll() reads what the ranks wrote since the last poll (pread, never a
//    mapping: a rank truncating its file cannot fault the launcher), marks
//    each file as watched (TraceFileHeader::watcher, which enables the
//    ranks' back-pressure) and publishes how far it has read (`watched`) and
//    verified (`verified`: calls whose every member agreed, and calls
//    nothing compares: p2p, groups of one, in-band-verified groups).
//  - A mismatch among the members seen so far becomes the verdict once every
//    member has posted the call, or `verdictDelay` after it was first seen
//    (a member that never gets there is not waited for). The verdict is the
//    CollectiveMismatch message naming every call seen and its ranks; poll()
//    returns it from then on. The first mismatch found wins.
//  - postVerdict() writes it into every rank's file; ranks waiting in a
//    collective (or starting one, or about to exit) raise it as
//    CollectiveMismatch.
#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "harness/comm/fingerprint.h"
#include "harness/comm/flight_recorder.h"

namespace moe::comm {

// The fingerprint a record holds (`to`/`from` sized by nSplits), and the
// inverse: stores `f` in `r` (seq, op, dtype, arg, numel, per-rank sizes;
// nSplits = groupSize when it is at most kTraceMaxRanks, else 0).
Fingerprint fingerprintOf(const TraceRecord& r);
void storeFingerprint(TraceRecord& r, const Fingerprint& f, int groupSize);

struct TraceVerifierOptions {
  std::chrono::milliseconds verdictDelay{100};
};

class TraceVerifier {
 public:
  TraceVerifier(std::string dir, int worldSize, TraceVerifierOptions opts = {});
  ~TraceVerifier();
  TraceVerifier(const TraceVerifier&) = delete;
  TraceVerifier& operator=(const TraceVerifier&) = delete;

  // The process id of each rank (indexed by rank): a trace file written by
  // another process (an earlier job's, in a reused directory) is not read.
  // Unset: every file is read.
  void expectPids(std::vector<int> pids) { pids_ = std::move(pids); }
  // Reads, compares, publishes; returns the verdict ("" none yet).
  std::string poll();
  const std::string& verdict() const { return verdict_; }
  void postVerdict();
  // Calls compared and found consistent; records overwritten before they
  // were read (only possible before the launcher's first read of a file).
  int64_t verifiedCalls() const { return verifiedCalls_; }
  int64_t lostRecords() const { return lostRecords_; }

 private:
  struct RankFile;
  struct Entry;
  void readRank(int rank);
  void add(int rank, const TraceRecord& r);
  void markVerified(int rank, uint64_t id);
  void settle(const std::string& key, Entry& e, bool deadlinePassed);

  std::string dir_;
  int worldSize_;
  std::vector<int> pids_;
  TraceVerifierOptions opts_;
  std::vector<std::unique_ptr<RankFile>> files_;
  std::map<std::string, std::unique_ptr<Entry>> entries_;  // calls not all members have posted yet
  std::set<std::string> mismatched_;                       // keys of entries holding a mismatch
  std::string verdict_;
  int64_t verifiedCalls_ = 0;
  int64_t lostRecords_ = 0;
};

}  // namespace moe::comm
