#include "harness/checks/comm_check.h"

#include "common/registry.h"
#include "harness/checks/dispatch_volume.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>

#include "harness/checks/check_common.h"
#include "common/error.h"

namespace moe::checks {

CommCounters snapshotCounters() { return comm::FlightRecorder::instance().counters(); }

CommCounters counterDelta(const CommCounters& before, const CommCounters& after) {
  CommCounters d;
  for (const auto& [key, a] : after) {
    comm::OpCounter c = a;
    auto it = before.find(key);
    if (it != before.end()) {
      c.calls -= it->second.calls;
      c.bytesSent -= it->second.bytesSent;
      c.bytesRecv -= it->second.bytesRecv;
      c.seconds -= it->second.seconds;
    }
    if (c.calls != 0) d[key] = c;
  }
  return d;
}


namespace {
std::string plural(int64_t n, const char* op) { return moe::str(n, " ", op, n == 1 ? " call" : " calls"); }

std::string ratio(double measured, double expected) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", expected != 0 ? measured / expected : INFINITY);
  return buf;
}

std::string key(const std::string& group, comm::OpType op) { return group + "/" + comm::opName(op); }
}  // namespace

CheckResult checkCommunication(int rank, const CommCounters& delta, const std::vector<CommExpectation>& expected,
                               const CommCheckOptions& options) {
  std::string failure;
  auto fail = [&](const std::string& m) {
    if (failure.empty()) failure = m;
  };
  nlohmann::json measured = nlohmann::json::object();
  std::set<std::pair<std::string, comm::OpType>> listed;
  for (const CommExpectation& e : expected) {
    if (!listed.insert({e.group, e.op}).second)
      moe::fail("communication check: (", e.group, ", ", comm::opName(e.op), ") is expected twice");
    comm::OpCounter c;
    auto it = delta.find({e.group, e.op});
    if (it != delta.end()) c = it->second;
    nlohmann::json m = {{"calls", c.calls}, {"expected_calls", e.calls}, {"bytes_sent", c.bytesSent},
                        {"bytes_recv", c.bytesRecv}};
    const char* op = comm::opName(e.op);
    if (c.calls > e.calls)
      fail(moe::str("rank ", rank, ": extra collective: ", plural(c.calls, op), " on group ", e.group, ", expected ",
                    e.calls));
    else if (c.calls < e.calls)
      fail(moe::str("rank ", rank, ": missing collective: ", plural(c.calls, op), " on group ", e.group,
                    ", expected ", e.calls));
    struct B {
      const char* what;
      int64_t got;
      std::optional<int64_t> want;
    } bs[] = {{"sent", c.bytesSent, e.bytesSent}, {"received", c.bytesRecv, e.bytesRecv}};
    for (const B& b : bs) {
      if (!b.want) continue;
      std::string r = ratio(static_cast<double>(b.got), static_cast<double>(*b.want));
      m[std::string("ratio_bytes_") + (b.what[0] == 's' ? "sent" : "recv")] =
          *b.want ? static_cast<double>(b.got) / static_cast<double>(*b.want) : 0.0;
      m[std::string("expected_bytes_") + (b.what[0] == 's' ? "sent" : "recv")] = *b.want;
      if (std::abs(static_cast<double>(b.got - *b.want)) > options.bytesRtol * static_cast<double>(*b.want))
        fail(moe::str("rank ", rank, ": ", op, " on group ", e.group, " ", b.what, " ", b.got,
                      " bytes, expected ", *b.want, " (measured/expected ", r, ")"));
    }
    measured[key(e.group, e.op)] = m;
  }
  for (const auto& [k, c] : delta) {
    if (listed.count(k) || c.calls == 0) continue;
    const auto& ignore = options.ignoreGroups;
    measured[key(k.first, k.second)] = {{"calls", c.calls}, {"expected_calls", 0}, {"bytes_sent", c.bytesSent},
                                        {"bytes_recv", c.bytesRecv}};
    if (std::find(ignore.begin(), ignore.end(), k.first) != ignore.end()) continue;
    fail(moe::str("rank ", rank, ": extra collective: ", plural(c.calls, comm::opName(k.second)), " on group ",
                  k.first, ", expected none"));
  }
  CheckResult r;
  r.check = "communication";
  r.passed = failure.empty();
  r.measured = {{"per_group_op", measured}};
  r.explanation = r.passed ? moe::str(expected.size(), " (group, op) expectations met, no other collectives")
                           : failure;
  return r;
}

CheckResult checkCommunicationCollective(comm::Communicator& world, const CommCounters& delta,
                                         const std::vector<CommExpectation>& expected,
                                         const CommCheckOptions& options) {
  const int rank = world.globalRanks()[world.rank()];
  CheckResult local;
  std::string error;
  try {
    local = checkCommunication(rank, delta, expected, options);
  } catch (const HarnessError& e) {
    error = moe::str("rank ", rank, ": ", e.what());
  }
  Verdict v = agreeVerdict(world, error.empty() ? (local.passed ? "" : local.explanation) : error);
  CheckResult r;
  r.check = "communication";
  r.passed = !v.failed;
  // Counts are per rank; keep every rank's (they may legitimately differ).
  nlohmann::json perRank = nlohmann::json::array();
  for (const std::string& s : allGatherStrings(world, local.measured.dump()))
    perRank.push_back(s.empty() ? nlohmann::json() : nlohmann::json::parse(s));
  r.measured = {{"per_rank", perRank}, {"failing_ranks", v.failingRanks}};
  r.explanation = v.failed ? v.explanation : moe::str(local.explanation, " on ", world.size(), " ranks");
  return r;
}

// The communication verdict of a run: step 1's collectives per (group, op)
// as the plan implies them, and the dispatch volume (dispatch_volume.h).
CheckResult CommunicationCheck::run(const CheckContext& ctx) const {
  const char* kName = "communication";
  mesh::DeviceMesh& mesh = require(ctx.mesh, kName, "mesh");
  const DispatchInputs& dispatch = require(ctx.dispatch, kName, "dispatch");
  const auto expected = expectedDispatch(require(ctx.plan, kName, "plan"), mesh.shape(),
                                         require(ctx.config, kName, "model config"), dispatch.globalTokens);
  auto volume = checkDispatchVolume(*mesh.world(), dispatch.sentRows, expected);
  auto calls = checkCommunicationCollective(*mesh.world(), require(ctx.commDelta, kName, "counter delta (CommWindow)"),
                                            require(ctx.commExpected, kName, "expectations"), ctx.communication);
  CheckResult r;
  r.check = kName;
  r.passed = volume.passed && calls.passed;
  r.measured = {{"dispatch", volume.measured}, {"collectives", calls.measured}};
  r.explanation = !calls.passed ? calls.explanation
                  : !volume.passed ? volume.explanation
                                   : calls.explanation + "; " + volume.explanation;
  return r;
}

MOE_REGISTER(Check, CommunicationCheck);

}  // namespace moe::checks
