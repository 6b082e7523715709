#include "harness/comm/trace_verifier.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <deque>
#include <optional>

#include "common/error.h"

namespace moe::comm {

Fingerprint fingerprintOf(const TraceRecord& r) {
  Fingerprint f;
  f.seq = r.seq;
  f.op = r.op;
  f.dtype = r.dtype;
  f.arg = r.arg;
  f.numelIn = r.numelIn;
  f.numelOut = r.numelOut;
  const int n = std::min(r.nSplits, kTraceMaxRanks);
  f.to.assign(r.to, r.to + n);
  if (r.op == static_cast<int32_t>(OpType::kAllToAll)) f.from.assign(r.from, r.from + n);
  return f;
}

void storeFingerprint(TraceRecord& r, const Fingerprint& f, int groupSize) {
  r.seq = f.seq;
  r.op = f.op;
  r.dtype = f.dtype;
  r.arg = f.arg;
  r.numelIn = f.numelIn;
  r.numelOut = f.numelOut;
  r.nSplits = groupSize <= kTraceMaxRanks ? groupSize : 0;
  for (size_t j = 0; j < f.to.size() && j < static_cast<size_t>(r.nSplits); ++j) r.to[j] = f.to[j];
  for (size_t j = 0; j < f.from.size() && j < static_cast<size_t>(r.nSplits); ++j) r.from[j] = f.from[j];
}

struct TraceVerifier::RankFile {
  int fd = -1;
  int pid = 0;
  uint64_t epoch = 0;
  uint64_t cursor = 0;  // id of the last record read
  uint64_t publishedWatched = 0, publishedVerified = 0;
  uint64_t verifiedThrough = 0;
  std::deque<bool> pending;  // ids verifiedThrough+1, ...: verified yet?
  bool watching = false;
};

struct TraceVerifier::Entry {
  std::string group;
  std::vector<std::optional<Fingerprint>> fps;  // by group rank
  std::vector<int> globalRanks;                 // by group rank, -1 unknown
  std::vector<std::pair<int, uint64_t>> posters;  // (rank, record id)
  bool mismatch = false;
  std::chrono::steady_clock::time_point mismatchSince;
};

namespace {

template <typename T>
void writeField(int fd, size_t offset, const T& value) {
  if (pwrite(fd, &value, sizeof(value), static_cast<off_t>(offset)) != static_cast<ssize_t>(sizeof(value))) {
    // The rank's file went away (it exited and the directory was cleaned):
    // nothing left to tell it.
  }
}

}  // namespace

TraceVerifier::TraceVerifier(std::string dir, int worldSize, TraceVerifierOptions opts)
    : dir_(std::move(dir)), worldSize_(worldSize), opts_(opts) {
  for (int r = 0; r < worldSize_; ++r) files_.push_back(std::make_unique<RankFile>());
}

TraceVerifier::~TraceVerifier() {
  for (auto& f : files_)
    if (f->fd >= 0) close(f->fd);
}

void TraceVerifier::markVerified(int rank, uint64_t id) {
  RankFile& f = *files_[rank];
  if (id <= f.verifiedThrough) return;
  const uint64_t index = id - f.verifiedThrough - 1;
  if (index >= f.pending.size()) return;  // from before a reconfiguration
  f.pending[index] = true;
  while (!f.pending.empty() && f.pending.front()) {
    f.pending.pop_front();
    ++f.verifiedThrough;
  }
}

void TraceVerifier::settle(const std::string& key, Entry& e, bool deadlinePassed) {
  std::vector<const Fingerprint*> fps;
  bool all = true;
  for (const auto& fp : e.fps) {
    fps.push_back(fp ? &*fp : nullptr);
    all &= fp.has_value();
  }
  const std::string msg = compareFingerprints(e.group, e.globalRanks, fps);
  if (msg.empty()) {
    if (!all) return;
    for (const auto& [rank, id] : e.posters) markVerified(rank, id);
    ++verifiedCalls_;
    mismatched_.erase(key);
    entries_.erase(key);  // e dies here
    return;
  }
  if (!e.mismatch) {
    e.mismatch = true;
    e.mismatchSince = std::chrono::steady_clock::now();
    mismatched_.insert(key);
  }
  if ((all || deadlinePassed) && verdict_.empty()) verdict_ = msg;
}

void TraceVerifier::add(int rank, const TraceRecord& r) {
  const auto op = static_cast<OpType>(r.op);
  if (r.verify != static_cast<int32_t>(VerifyMode::kTrace) || r.groupSize <= 1 || op == OpType::kSend ||
      op == OpType::kRecv || r.groupRank < 0 || r.groupRank >= r.groupSize) {
    markVerified(rank, r.id);  // nothing here compares it
    return;
  }
  const std::string group(r.group, strnlen(r.group, sizeof(r.group)));
  const std::string key = moe::str(group, "|", r.groupHash, "|", r.groupSize, "|", r.seq);
  auto& slot = entries_[key];
  if (!slot) {
    slot = std::make_unique<Entry>();
    slot->group = group;
    slot->fps.resize(r.groupSize);
    slot->globalRanks.assign(r.groupSize, -1);
  }
  Entry& e = *slot;
  if (e.fps[r.groupRank]) return;  // a second record of one member: a reconfigured rank, ignore
  e.fps[r.groupRank] = fingerprintOf(r);
  e.globalRanks[r.groupRank] = rank;
  e.posters.push_back({rank, r.id});
  settle(key, e, /*deadlinePassed=*/false);
}

void TraceVerifier::readRank(int rank) {
  RankFile& f = *files_[rank];
  if (f.fd < 0) {
    f.fd = open((dir_ + "/rank" + std::to_string(rank) + ".trace").c_str(), O_RDWR | O_CLOEXEC);
    if (f.fd < 0) return;  // not configured yet
  }
  TraceFileHeader h;
  if (pread(f.fd, &h, sizeof(h), 0) != static_cast<ssize_t>(sizeof(h))) return;
  if (memcmp(h.magic, "MOETRACE", 8) != 0 || h.capacity == 0) return;
  if (static_cast<size_t>(rank) < pids_.size() && h.pid != pids_[rank]) return;  // not this job's rank (yet)
  if (h.pid != f.pid || h.epoch != f.epoch || h.count < f.cursor) {  // a new or reconfigured recorder: start over
    f.pid = h.pid;
    f.epoch = h.epoch;
    f.cursor = f.verifiedThrough = f.publishedWatched = f.publishedVerified = 0;
    f.pending.clear();
    f.watching = false;
  }
  if (!f.watching) {
    const uint32_t one = 1;
    writeField(f.fd, offsetof(TraceFileHeader, watcher), one);
    f.watching = true;
  }
  if (h.count > f.cursor + h.capacity) {
    lostRecords_ += static_cast<int64_t>(h.count - h.capacity - f.cursor);
    for (uint64_t id = f.cursor + 1; id <= h.count - h.capacity; ++id) f.pending.push_back(false);
    // Lost calls are never verified; `verified` stops before them.
    f.cursor = h.count - h.capacity;
  }
  for (uint64_t id = f.cursor + 1; id <= h.count; ++id) {
    TraceRecord r;
    const off_t at = static_cast<off_t>(sizeof(TraceFileHeader) + ((id - 1) % h.capacity) * sizeof(TraceRecord));
    if (pread(f.fd, &r, sizeof(r), at) != static_cast<ssize_t>(sizeof(r)) || r.id != id) break;  // torn: next poll
    f.cursor = id;
    f.pending.push_back(false);
    add(rank, r);
  }
  if (f.cursor != f.publishedWatched) {
    writeField(f.fd, offsetof(TraceFileHeader, watched), f.cursor);
    f.publishedWatched = f.cursor;
  }
  if (f.verifiedThrough != f.publishedVerified) {
    writeField(f.fd, offsetof(TraceFileHeader, verified), f.verifiedThrough);
    f.publishedVerified = f.verifiedThrough;
  }
}

std::string TraceVerifier::poll() {
  for (int r = 0; r < worldSize_; ++r) readRank(r);
  // `verified` was published per rank as it was read; a call verified by a
  // later rank's records is published at the next poll.
  for (int r = 0; r < worldSize_; ++r) {
    RankFile& f = *files_[r];
    if (f.fd >= 0 && f.verifiedThrough != f.publishedVerified) {
      writeField(f.fd, offsetof(TraceFileHeader, verified), f.verifiedThrough);
      f.publishedVerified = f.verifiedThrough;
    }
  }
  if (verdict_.empty()) {
    const auto now = std::chrono::steady_clock::now();
    for (const auto& key : std::vector<std::string>(mismatched_.begin(), mismatched_.end())) {
      auto it = entries_.find(key);
      if (it != entries_.end() && now - it->second->mismatchSince >= opts_.verdictDelay)
        settle(key, *it->second, /*deadlinePassed=*/true);
      if (!verdict_.empty()) break;
    }
  }
  return verdict_;
}

void TraceVerifier::postVerdict() {
  if (verdict_.empty()) return;
  char text[sizeof(TraceFileHeader::verdict)] = {};
  strncpy(text, verdict_.c_str(), sizeof(text) - 1);
  for (int r = 0; r < worldSize_; ++r) {
    RankFile& f = *files_[r];
    if (f.fd < 0) f.fd = open((dir_ + "/rank" + std::to_string(r) + ".trace").c_str(), O_RDWR | O_CLOEXEC);
    if (f.fd < 0) continue;
    // The text first, then the flag: a rank that sees the flag reads the whole text.
    if (pwrite(f.fd, text, sizeof(text), offsetof(TraceFileHeader, verdict)) == static_cast<ssize_t>(sizeof(text)))
      writeField(f.fd, offsetof(TraceFileHeader, verdictPosted), uint32_t{1});
  }
}

}  // namespace moe::comm
