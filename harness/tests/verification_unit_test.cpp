// Verification without processes: compareFingerprints on hand-made
// fingerprints (the comparison both modes share), and TraceVerifier (the
// launcher's side of trace verification) on hand-written trace files.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <filesystem>

#include "harness/comm/fingerprint.h"
#include "harness/comm/trace_verifier.h"

using namespace moe;
using namespace moe::comm;
namespace fs = std::filesystem;

namespace {

constexpr int32_t kF32 = 6, kBF16 = 15;  // c10::ScalarType values of float32, bfloat16

Fingerprint allReduce(uint64_t seq, int64_t numel, int32_t dtype = kF32, ReduceOp op = ReduceOp::kSum) {
  Fingerprint f;
  f.seq = seq;
  f.op = static_cast<int32_t>(OpType::kAllReduce);
  f.dtype = dtype;
  f.arg = static_cast<int32_t>(op);
  f.numelIn = f.numelOut = numel;
  return f;
}

// all_gather of rows[r] rows of width w from each rank, seen from `rank`.
Fingerprint allGather(uint64_t seq, const std::vector<int64_t>& rows, int64_t w, int rank) {
  Fingerprint f;
  f.seq = seq;
  f.op = static_cast<int32_t>(OpType::kAllGather);
  f.dtype = kF32;
  int64_t total = 0;
  for (int64_t r : rows) {
    f.to.push_back(r * w);
    total += r * w;
  }
  f.numelIn = rows[rank] * w;
  f.numelOut = total;
  return f;
}

// all_to_all: this rank sends in[j] and receives out[j] elements.
Fingerprint allToAll(uint64_t seq, std::vector<int64_t> in, std::vector<int64_t> out) {
  Fingerprint f;
  f.seq = seq;
  f.op = static_cast<int32_t>(OpType::kAllToAll);
  f.dtype = kF32;
  for (int64_t x : in) f.numelIn += x;
  for (int64_t x : out) f.numelOut += x;
  f.to = std::move(in);
  f.from = std::move(out);
  return f;
}

std::string compare(const std::vector<Fingerprint>& fps, std::vector<int> skip = {}) {
  std::vector<const Fingerprint*> p;
  std::vector<int> ranks;
  for (size_t r = 0; r < fps.size(); ++r) {
    bool skipped = std::find(skip.begin(), skip.end(), static_cast<int>(r)) != skip.end();
    p.push_back(skipped ? nullptr : &fps[r]);
    ranks.push_back(static_cast<int>(r));
  }
  return compareFingerprints("world", ranks, p);
}

TEST(CompareFingerprints, AgreeingCallsAreNotFlagged) {
  EXPECT_EQ(compare({allReduce(3, 16), allReduce(3, 16), allReduce(3, 16)}), "");
}

TEST(CompareFingerprints, UnevenAllGatherRowsThatAgreeAreNotFlagged) {
  // torch.chunk of 9 rows over 4 ranks: 3, 3, 3, 0 (an empty piece).
  const std::vector<int64_t> rows = {3, 3, 3, 0};
  std::vector<Fingerprint> fps;
  for (int r = 0; r < 4; ++r) fps.push_back(allGather(5, rows, 8, r));
  EXPECT_EQ(compare(fps), "");
}

TEST(CompareFingerprints, DifferentOpsNameEveryCallAndItsRanks) {
  Fingerprint gather = allGather(2, {4, 4, 4, 4}, 4, 1);
  EXPECT_EQ(compare({allReduce(2, 16), gather, allReduce(2, 16), allReduce(2, 16)}),
            "collective mismatch on group 'world': ranks 0,2,3 called all_reduce#2(float32, sum, numel 16); "
            "rank 1 called all_gather#2(float32, output numel 64)");
}

TEST(CompareFingerprints, DifferentDtypeNumelAndReduceOpAreFlagged) {
  EXPECT_NE(compare({allReduce(2, 8), allReduce(2, 8, kBF16)}).find("rank 1 called all_reduce#2(bfloat16, sum, numel 8)"),
            std::string::npos);
  EXPECT_NE(compare({allReduce(2, 9), allReduce(2, 8)}).find("rank 0 called all_reduce#2(float32, sum, numel 9)"),
            std::string::npos);
  EXPECT_NE(compare({allReduce(2, 8), allReduce(2, 8, kF32, ReduceOp::kMax)}).find("rank 1 called all_reduce#2(float32, max"),
            std::string::npos);
  // Different sequence numbers: one rank issued an extra collective.
  EXPECT_NE(compare({allReduce(3, 8), allReduce(2, 8)}).find("rank 0 called all_reduce#3"), std::string::npos);
}

TEST(CompareFingerprints, AllToAllSplitsMustMatchSenderAndReceiver) {
  // 2 ranks, rows of 3 elements: rank 1 sends 2 rows to rank 0, which expects 1.
  EXPECT_EQ(compare({allToAll(4, {3, 3}, {3, 3}), allToAll(4, {3, 3}, {3, 3})}), "");
  EXPECT_EQ(compare({allToAll(4, {3, 3}, {3, 3}), allToAll(4, {6, 3}, {3, 3})}),
            "collective mismatch: all_to_all#4 split sizes disagree on group 'world': rank 1 sends 6 elements to "
            "rank 0, but rank 0 expects 3 from rank 1");
}

TEST(CompareFingerprints, UnevenAllGatherWithAWrongContributionIsFlagged) {
  std::vector<Fingerprint> fps;
  for (int r = 0; r < 4; ++r) fps.push_back(allGather(5, {3, 3, 3, 0}, 8, r));
  fps[3].numelIn = 8;  // rank 3 passes a row although the agreed count for it is 0
  EXPECT_EQ(compare(fps), "collective mismatch: all_gather#5 on group 'world': rank 3 passes 8 elements but the "
                          "agreed size for it is 0");
  fps[3].numelIn = 0;
  fps[2].to[3] = 8;  // rank 2 expects a row from rank 3
  EXPECT_NE(compare(fps).find("rank 2 expects 8 elements for rank 3, rank 0 expects 0"), std::string::npos);
}

TEST(CompareFingerprints, UnknownMembersAreNeitherComparedNorNamed) {
  EXPECT_EQ(compare({allReduce(2, 8), allReduce(2, 9), allReduce(2, 8)}, /*skip=*/{1}), "");
  const std::string m = compare({allReduce(2, 8), allReduce(2, 9), allReduce(2, 7)}, /*skip=*/{2});
  EXPECT_EQ(m, "collective mismatch on group 'world': rank 0 called all_reduce#2(float32, sum, numel 8); "
               "rank 1 called all_reduce#2(float32, sum, numel 9)");
}

// --- TraceVerifier on hand-written trace files ------------------------------

struct TraceDir {
  fs::path dir;
  TraceDir() {
    dir = fs::temp_directory_path() / ("moe-verify-unit-" + std::to_string(getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  ~TraceDir() { fs::remove_all(dir); }
  std::string file(int rank) const { return (dir / ("rank" + std::to_string(rank) + ".trace")).string(); }

  // Writes rank `rank`'s file as a recorder of capacity 256 would, with `records` (ids from 1).
  void write(int rank, std::vector<TraceRecord> records) const {
    TraceFileHeader h{};
    memcpy(h.magic, "MOETRACE", 8);
    h.version = 2;
    h.rank = rank;
    h.pid = 1000 + rank;
    h.capacity = 256;
    h.count = records.size();
    int fd = open(file(rank).c_str(), O_RDWR | O_CREAT, 0644);
    ASSERT_GE(fd, 0);
    // Keep what a launcher already wrote into the header (its words).
    TraceFileHeader old{};
    if (pread(fd, &old, sizeof(old), 0) == static_cast<ssize_t>(sizeof(old))) {
      h.watcher = old.watcher;
      h.watched = old.watched;
      h.verified = old.verified;
      h.verdictPosted = old.verdictPosted;
      memcpy(h.verdict, old.verdict, sizeof(h.verdict));
    }
    ASSERT_EQ(pwrite(fd, &h, sizeof(h), 0), static_cast<ssize_t>(sizeof(h)));
    for (size_t i = 0; i < records.size(); ++i) {
      records[i].id = i + 1;
      ASSERT_EQ(pwrite(fd, &records[i], sizeof(TraceRecord), sizeof(h) + i * sizeof(TraceRecord)),
                static_cast<ssize_t>(sizeof(TraceRecord)));
    }
    close(fd);
  }
  TraceFileHeader header(int rank) const {
    TraceFileHeader h{};
    int fd = open(file(rank).c_str(), O_RDONLY);
    EXPECT_EQ(pread(fd, &h, sizeof(h), 0), static_cast<ssize_t>(sizeof(h)));
    close(fd);
    return h;
  }
};

TraceRecord record(const Fingerprint& f, int groupRank, int groupSize, const char* group = "world") {
  TraceRecord r;
  storeFingerprint(r, f, groupSize);
  r.groupSize = groupSize;
  r.groupRank = groupRank;
  r.groupHash = 42;
  r.verify = static_cast<int32_t>(VerifyMode::kTrace);
  r.state = 2;  // running
  strncpy(r.group, group, sizeof(r.group) - 1);
  return r;
}

TEST(TraceVerifier, AStoredFingerprintReadsBackWhole) {
  TraceRecord r = record(allToAll(7, {3, 0, 6}, {1, 2, 3}), 1, 3);
  Fingerprint f = fingerprintOf(r);
  EXPECT_EQ(describeFingerprint(f), "all_to_all#7(float32)");
  EXPECT_EQ(f.to, (std::vector<int64_t>{3, 0, 6}));
  EXPECT_EQ(f.from, (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(f.numelIn, 9);
  EXPECT_EQ(f.numelOut, 6);
  // A group too large for the record keeps no per-rank sizes (it verifies in-band).
  EXPECT_EQ(record(allReduce(1, 4), 0, kTraceMaxRanks + 1).nSplits, 0);
}

TEST(TraceVerifier, AgreeingCallsAreVerifiedAndPublished) {
  TraceDir d;
  d.write(0, {record(allReduce(1, 8), 0, 2), record(allReduce(2, 8), 0, 2)});
  d.write(1, {record(allReduce(1, 8), 1, 2)});
  TraceVerifier v(d.dir.string(), 2);
  EXPECT_EQ(v.poll(), "");
  EXPECT_EQ(v.verifiedCalls(), 1);
  TraceFileHeader h0 = d.header(0);
  EXPECT_EQ(h0.watcher, 1u);
  EXPECT_EQ(h0.watched, 2u);
  EXPECT_EQ(h0.verified, 1u);  // call 2 still waits for rank 1
  d.write(1, {record(allReduce(1, 8), 1, 2), record(allReduce(2, 8), 1, 2)});
  EXPECT_EQ(v.poll(), "");
  EXPECT_EQ(v.verifiedCalls(), 2);
  EXPECT_EQ(d.header(0).verified, 2u);
  EXPECT_EQ(d.header(1).verified, 2u);
  EXPECT_EQ(d.header(0).verdictPosted, 0u);
}

TEST(TraceVerifier, AMismatchWaitsForEveryMemberThenIsPostedToEveryRank) {
  TraceDir d;
  const Fingerprint gather = allGather(1, {4, 4, 4}, 1, 1);
  d.write(0, {record(allReduce(1, 4), 0, 3)});
  d.write(1, {record(gather, 1, 3)});
  TraceVerifierOptions o;
  o.verdictDelay = std::chrono::hours(1);  // only a complete set settles it here
  TraceVerifier v(d.dir.string(), 3, o);
  EXPECT_EQ(v.poll(), "");  // rank 2 has not posted yet
  d.write(2, {record(allReduce(1, 4), 2, 3)});
  const std::string verdict = v.poll();
  EXPECT_EQ(verdict, "collective mismatch on group 'world': ranks 0,2 called all_reduce#1(float32, sum, numel 4); "
                     "rank 1 called all_gather#1(float32, output numel 12)");
  v.postVerdict();
  for (int r = 0; r < 3; ++r) {
    TraceFileHeader h = d.header(r);
    EXPECT_EQ(h.verdictPosted, 1u) << r;
    EXPECT_EQ(std::string(h.verdict), verdict) << r;
    EXPECT_EQ(h.verified, 0u) << r;  // a mismatched call is never verified
  }
}

TEST(TraceVerifier, AMismatchIsReportedAfterTheDelayWithoutAMemberThatNeverComes) {
  TraceDir d;
  d.write(0, {record(allReduce(1, 4), 0, 3)});
  d.write(1, {record(allReduce(1, 5), 1, 3)});
  TraceVerifierOptions o;
  o.verdictDelay = std::chrono::milliseconds(0);
  TraceVerifier v(d.dir.string(), 3, o);
  EXPECT_EQ(v.poll(), "collective mismatch on group 'world': rank 0 called all_reduce#1(float32, sum, numel 4); "
                      "rank 1 called all_reduce#1(float32, sum, numel 5)");
}

TEST(TraceVerifier, SiblingGroupsOfOneNameAndInBandCallsAreNotCompared) {
  TraceDir d;
  // "ep" {0,1} and "ep" {2,3}: same name and sequence number, different
  // members (hash), different sizes: no mismatch.
  TraceRecord a0 = record(allReduce(1, 4), 0, 2, "ep"), a1 = record(allReduce(1, 4), 1, 2, "ep");
  TraceRecord b0 = record(allReduce(1, 6), 0, 2, "ep"), b1 = record(allReduce(1, 6), 1, 2, "ep");
  b0.groupHash = b1.groupHash = 43;
  // An in-band-verified call is the backend's to check.
  TraceRecord inBand = record(allReduce(2, 100 + 1), 0, 2, "ep");
  inBand.verify = static_cast<int32_t>(VerifyMode::kInBand);
  d.write(0, {a0, inBand});
  d.write(1, {a1});
  d.write(2, {b0});
  d.write(3, {b1});
  TraceVerifier v(d.dir.string(), 4);
  EXPECT_EQ(v.poll(), "");
  EXPECT_EQ(v.verifiedCalls(), 2);
  EXPECT_EQ(d.header(0).verified, 2u);
}

}  // namespace

namespace {

TEST(TraceVerifier, AFileOfAnotherProcessIsNotRead) {
  // An earlier job's trace in a reused directory (same name, another pid)
  // must not be compared with this job's ranks: a false mismatch otherwise.
  TraceDir d;
  d.write(0, {record(allReduce(1, 4), 0, 2)});                     // pid 1000
  d.write(1, {record(Fingerprint{.seq = 1, .op = 2}, 1, 2)});      // pid 1001: barrier#1
  TraceVerifierOptions o;
  o.verdictDelay = std::chrono::milliseconds(0);
  TraceVerifier v(d.dir.string(), 2, o);
  v.expectPids({1000, 4242});  // rank 1 of this job is process 4242
  EXPECT_EQ(v.poll(), "");
  EXPECT_EQ(d.header(1).watcher, 0u);  // not touched either
  TraceVerifier all(d.dir.string(), 2, o);  // without pids: the mismatch is seen
  EXPECT_NE(all.poll(), "");
}

}  // namespace
