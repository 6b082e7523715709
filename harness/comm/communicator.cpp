// The Communicator base (communicator.h): argument checks, fingerprint
// verification and flight recording around every backend call. Over 500
// lines on purpose: it is one non-virtual-interface class whose every public
// collective is "check the arguments, verify the fingerprint, record, call
// the backend, count"; splitting the ops across files would scatter that one
// pattern and its shared helpers without making any piece simpler.
#include "harness/comm/communicator.h"

#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <exception>
#include <mutex>
#include <numeric>
#include <sstream>
#include <unistd.h>
#include <thread>

#include "harness/comm/fingerprint.h"
#include "harness/comm/flight_recorder.h"
#include "harness/comm/trace_verifier.h"

namespace moe::comm {

const char* opName(OpType op) {
  switch (op) {
    case OpType::kAllReduce: return "all_reduce";
    case OpType::kBroadcast: return "broadcast";
    case OpType::kBarrier: return "barrier";
    case OpType::kSend: return "send";
    case OpType::kRecv: return "recv";
    case OpType::kAllGather: return "all_gather";
    case OpType::kReduceScatter: return "reduce_scatter";
    case OpType::kAllToAll: return "all_to_all";
    case OpType::kNumOps: break;
  }
  return "?";
}

const char* verifyModeName(VerifyMode m) {
  switch (m) {
    case VerifyMode::kOff: return "off";
    case VerifyMode::kInBand: return "in-band";
    case VerifyMode::kTrace: return "trace";
  }
  return "?";
}

const char* reduceOpName(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return "sum";
    case ReduceOp::kAvg: return "avg";
    case ReduceOp::kMax: return "max";
    case ReduceOp::kMin: return "min";
  }
  return "?";
}

std::string dtypeName(int32_t scalarType) {
  if (scalarType < 0) return "-";
  switch (static_cast<at::ScalarType>(scalarType)) {
    case at::kFloat: return "float32";
    case at::kBFloat16: return "bfloat16";
    case at::kHalf: return "float16";
    case at::kDouble: return "float64";
    case at::kLong: return "int64";
    case at::kInt: return "int32";
    case at::kByte: return "uint8";
    case at::kBool: return "bool";
    default: return c10::toString(static_cast<at::ScalarType>(scalarType));
  }
}

namespace {

constexpr int64_t kFingerprintMagic = 0x6d6f6566;  // "moef"
// Fingerprint layout (int64): magic, seq, op, dtype, numelIn, numelOut, arg,
// then n "to/of rank j" element counts and n "from rank i" element counts.
constexpr int kFpHeader = 7;

// MOE_HARNESS_VERIFY: "0"/"false" off, "trace" trace where possible, else in-band.
std::string verifyEnv() {
  const char* env = std::getenv("MOE_HARNESS_VERIFY");
  return env ? env : "";
}

VerifyMode modeFor(bool on, int groupSize) {
  if (!on) return VerifyMode::kOff;
  if (verifyEnv() == "trace" && FlightRecorder::instance().fileBacked() && groupSize <= kTraceMaxRanks)
    return VerifyMode::kTrace;
  return VerifyMode::kInBand;
}

// Trace verification runs a mismatched collective, and Gloo's transport
// thread may then throw (gloo::EnforceNotMet: "Received data size doesn't
// match expected size") where nothing catches it: std::terminate. The
// verdict, which the launcher posts within ~100 ms, is the cause; this
// handler waits for it, records and prints it, and exits 2 (a user error)
// instead of aborting. Without a verdict it aborts as before.
std::terminate_handler previousTerminate = nullptr;

[[noreturn]] void terminateWithVerdict() {
  auto& rec = FlightRecorder::instance();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  std::string v;
  while ((v = rec.verdict()).empty() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  if (!v.empty()) {
    rec.failInFlight(v);
    fprintf(stderr, "rank %d: error: %s (the backend failed on the mismatched buffers)\n", rec.rank(), v.c_str());
    fflush(stderr);
    _exit(2);
  }
  if (previousTerminate) previousTerminate();
  std::abort();
}

void installTerminateHandlerOnce() {
  static std::once_flag once;
  std::call_once(once, [] { previousTerminate = std::set_terminate(terminateWithVerdict); });
}

uint64_t hashRanks(const std::vector<int>& ranks) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (int r : ranks) {
    h ^= static_cast<uint64_t>(r) + 1;
    h *= 1099511628211ull;
  }
  return h;
}

double nowSeconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string shapeStr(const at::Tensor& t) {
  std::ostringstream os;
  os << "[";
  for (int64_t d = 0; d < t.dim(); ++d) os << (d ? ", " : "") << t.size(d);
  os << "]";
  return os.str();
}

std::string joinInts(const std::vector<int64_t>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s;
}

void copyField(char* dst, size_t n, const std::string& s) {
  strncpy(dst, s.c_str(), n - 1);
  dst[n - 1] = 0;
}

int64_t rowNumel(const at::Tensor& t) {
  return t.dim() == 0 ? 1 : (t.size(0) == 0 ? [&] {
    int64_t n = 1;
    for (int64_t d = 1; d < t.dim(); ++d) n *= t.size(d);
    return n;
  }() : t.numel() / t.size(0));
}

}  // namespace

struct Communicator::Call {
  explicit Call(OpType o) : op(o) {}
  OpType op;
  at::ScalarType dtype = at::kFloat;
  bool hasDtype = true;
  int64_t numelIn = 0;
  int64_t numelOut = 0;
  int32_t arg = -1;
  std::vector<int64_t> to;    // elements this rank sends to / contributes for each rank
  std::vector<int64_t> from;  // elements this rank receives from each rank
  int64_t bytesSent = 0;
  int64_t bytesRecv = 0;
  std::string shapes;
  std::string splits;
  uint64_t seq = 0;
};

Communicator::Communicator(std::string name, int rank, std::vector<int> globalRanks)
    : name_(std::move(name)), rank_(rank), globalRanks_(std::move(globalRanks)) {
  const std::string env = verifyEnv();
  setVerify(!(env == "0" || env == "false"));
  groupHash_ = hashRanks(globalRanks_);
  MOE_ASSERT(rank_ >= 0 && rank_ < static_cast<int>(globalRanks_.size()), "rank ", rank_,
             " outside group of ", globalRanks_.size());
  for (size_t i = 0; i < globalRanks_.size(); ++i) ranksText_ += (i ? "," : "") + std::to_string(globalRanks_[i]);
}

void Communicator::setVerify(bool on) {
  mode_ = modeFor(on, size());
  if (mode_ == VerifyMode::kTrace) installTerminateHandlerOnce();
}

void Communicator::throwIfVerdict() const {
  std::string v = FlightRecorder::instance().verdict();
  if (!v.empty()) throw CollectiveMismatch(v);
}

std::string settleVerification(double boundSeconds) {
  return FlightRecorder::instance().settleVerification(boundSeconds);
}

void Communicator::checkDtype(const at::Tensor& t, const char* op) const {
  switch (t.scalar_type()) {
    case at::kFloat:
    case at::kBFloat16:
    case at::kHalf:
    case at::kDouble:
    case at::kLong:
      return;
    default:
      fail(backendName(), " backend: ", op, " does not support dtype ", dtypeName(static_cast<int32_t>(t.scalar_type())),
           " (supported: float32, bfloat16, float16, float64, int64)");
  }
}

namespace {
void requireContiguous(const at::Tensor& t, const char* op, const char* which) {
  if (!t.defined()) fail(op, ": ", which, " tensor is undefined");
  if (!t.is_contiguous()) fail(op, ": ", which, " tensor must be contiguous (shape ", shapeStr(t), ")");
}
}  // namespace

void Communicator::checkP2p(const char* op, const at::Tensor& t, int peer) const {
  requireContiguous(t, op, "tensor");
  checkDtype(t, op);
  if (peer < 0 || peer >= size() || peer == rank_)
    fail(op, " on group '", name_, "': invalid peer ", peer, " (rank ", rank_, " of ", size(), ")");
}

void Communicator::checkRowOp(const char* op, const at::Tensor& out, const at::Tensor& in) const {
  requireContiguous(in, op, "input");
  requireContiguous(out, op, "output");
  checkDtype(in, op);
  if (in.scalar_type() != out.scalar_type())
    fail(op, " on group '", name_, "': input dtype ", dtypeName(static_cast<int32_t>(in.scalar_type())),
         " != output dtype ", dtypeName(static_cast<int32_t>(out.scalar_type())));
  if (in.dim() == 0 || out.dim() != in.dim())
    fail(op, " on group '", name_, "': input ", shapeStr(in), " and output ", shapeStr(out),
         " must have the same number (>= 1) of dims");
  for (int64_t d = 1; d < in.dim(); ++d)
    if (in.size(d) != out.size(d))
      fail(op, " on group '", name_, "': input ", shapeStr(in), " and output ", shapeStr(out), " differ in dim ", d);
}

void Communicator::verifyFingerprint(const Call& call) {
  const int n = size();
  const int len = kFpHeader + 2 * n;
  at::Tensor mine = at::zeros({len}, at::kLong);
  int64_t* p = mine.data_ptr<int64_t>();
  p[0] = kFingerprintMagic;
  p[1] = static_cast<int64_t>(call.seq);
  p[2] = static_cast<int64_t>(call.op);
  p[3] = static_cast<int64_t>(call.dtype);
  p[4] = call.numelIn;
  p[5] = call.numelOut;
  p[6] = call.arg;
  for (int j = 0; j < n && j < static_cast<int>(call.to.size()); ++j) p[kFpHeader + j] = call.to[j];
  for (int j = 0; j < n && j < static_cast<int>(call.from.size()); ++j) p[kFpHeader + n + j] = call.from[j];
  // Exchanged on the backend's device, directly through the backend so the
  // exchange itself is neither recorded nor verified.
  at::Tensor devMine = mine.to(device());
  at::Tensor devAll = at::empty({n * len}, at::TensorOptions().dtype(at::kLong).device(device()));
  doAllGather(devAll, devMine, std::vector<int64_t>(n, len));
  at::Tensor all = devAll.cpu();
  const int64_t* fps = all.data_ptr<int64_t>();
  std::vector<Fingerprint> received(n);
  std::vector<const Fingerprint*> ptrs(n);
  for (int r = 0; r < n; ++r) {
    const int64_t* f = fps + static_cast<size_t>(r) * len;
    if (f[0] != kFingerprintMagic)
      throw CollectiveMismatch(moe::str("collective mismatch on group '", name_, "': rank ", globalRanks_[r],
                                        " sent a garbage fingerprint (it called another collective)"));
    Fingerprint& fp = received[r];
    fp.seq = static_cast<uint64_t>(f[1]);
    fp.op = static_cast<int32_t>(f[2]);
    fp.dtype = static_cast<int32_t>(f[3]);
    fp.numelIn = f[4];
    fp.numelOut = f[5];
    fp.arg = static_cast<int32_t>(f[6]);
    fp.to.assign(f + kFpHeader, f + kFpHeader + n);
    if (call.op == OpType::kAllToAll) fp.from.assign(f + kFpHeader + n, f + kFpHeader + 2 * n);
    ptrs[r] = &fp;
  }
  const std::string mismatch = compareFingerprints(name_, globalRanks_, ptrs);
  if (!mismatch.empty()) throw CollectiveMismatch(mismatch);
}

template <typename Fn>
void Communicator::run(Call& call, Fn&& fn) {
  auto& rec = FlightRecorder::instance();
  const bool p2p = call.op == OpType::kSend || call.op == OpType::kRecv;
  call.seq = p2p ? 0 : ++seq_;
  const bool inBand = mode_ == VerifyMode::kInBand && size() > 1 && !p2p;
  Fingerprint fp;
  fp.seq = call.seq;
  fp.op = static_cast<int32_t>(call.op);
  fp.dtype = call.hasDtype ? static_cast<int32_t>(call.dtype) : -1;
  fp.arg = call.arg;
  fp.numelIn = call.numelIn;
  fp.numelOut = call.numelOut;
  fp.to = call.to;
  fp.from = call.from;
  TraceRecord r;
  storeFingerprint(r, fp, size());  // for the launcher (trace verification)
  r.state = static_cast<int32_t>(inBand ? CallState::kVerifying : CallState::kRunning);
  r.groupSize = size();
  r.groupRank = rank_;
  r.groupHash = groupHash_;
  r.verify = static_cast<int32_t>(mode_);
  r.bytesSent = call.bytesSent;
  r.bytesRecv = call.bytesRecv;
  r.tStart = nowSeconds();
  copyField(r.group, sizeof(r.group), name_);
  copyField(r.ranks, sizeof(r.ranks), ranksText_);
  copyField(r.shapes, sizeof(r.shapes), call.shapes);
  copyField(r.splits, sizeof(r.splits), call.splits);
  TraceRecord* slot = rec.begin(r);
  auto t0 = std::chrono::steady_clock::now();
  try {
    if (inBand) {
      verifyFingerprint(call);
      rec.setState(slot, CallState::kRunning);
    }
    if (pollsVerdict()) throwIfVerdict();  // a verdict already posted: fail before running
    try {
      fn();
    } catch (const CollectiveMismatch&) {
      throw;
    } catch (const std::exception&) {
      // A mismatched collective may fail in the backend (sizes it cannot
      // match) before the launcher's verdict arrives: the verdict, when it
      // comes, is the reason, the backend's error its consequence.
      if (!pollsVerdict() || size() < 2) throw;
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kVerdictGraceMs);
      while (std::chrono::steady_clock::now() < deadline) {
        throwIfVerdict();
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
      throw;
    }
  } catch (const std::exception& e) {
    slot->tEnd = nowSeconds();
    rec.setState(slot, CallState::kFailed, e.what());
    throw;
  }
  slot->tEnd = nowSeconds();
  rec.setState(slot, CallState::kCompleted);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  rec.count(name_, call.op, call.bytesSent, call.bytesRecv, secs);
}

void Communicator::allReduce(at::Tensor& t, ReduceOp op) {
  requireContiguous(t, "all_reduce", "input");
  checkDtype(t, "all_reduce");
  Call c{OpType::kAllReduce};
  c.dtype = t.scalar_type();
  c.numelIn = c.numelOut = t.numel();
  c.arg = static_cast<int32_t>(op);
  const int n = size();
  int64_t bytes = t.numel() * static_cast<int64_t>(t.element_size());
  c.bytesSent = c.bytesRecv = 2 * (n - 1) * bytes / n;
  c.shapes = shapeStr(t);
  run(c, [&] { if (n > 1) doAllReduce(t, op); });
}

void Communicator::broadcast(at::Tensor& t, int root) {
  requireContiguous(t, "broadcast", "input");
  checkDtype(t, "broadcast");
  if (root < 0 || root >= size()) fail("broadcast on group '", name_, "': root ", root, " outside group of ", size());
  Call c{OpType::kBroadcast};
  c.dtype = t.scalar_type();
  c.numelIn = c.numelOut = t.numel();
  c.arg = root;
  int64_t bytes = t.numel() * static_cast<int64_t>(t.element_size());
  if (size() > 1) (rank_ == root ? c.bytesSent : c.bytesRecv) = bytes;
  c.shapes = shapeStr(t);
  run(c, [&] { if (size() > 1) doBroadcast(t, root); });
}

void Communicator::barrier() {
  Call c{OpType::kBarrier};
  c.hasDtype = false;
  c.dtype = at::kLong;
  run(c, [&] { if (size() > 1) doBarrier(); });
}

void Communicator::send(const at::Tensor& t, int peer) {
  checkP2p("send", t, peer);
  Call c{OpType::kSend};
  c.dtype = t.scalar_type();
  c.numelIn = t.numel();
  c.arg = peer;
  c.bytesSent = t.numel() * static_cast<int64_t>(t.element_size());
  c.shapes = shapeStr(t);
  run(c, [&] {
    if (verifying()) {
      // p2p fingerprint: the receiver checks op, dtype and numel.
      at::Tensor fp = at::tensor({kFingerprintMagic, static_cast<int64_t>(OpType::kSend),
                                  static_cast<int64_t>(c.dtype), c.numelIn}, at::kLong);
      doSend(fp.to(t.device()), peer);
    }
    doSend(t, peer);
  });
}

void Communicator::recv(at::Tensor& t, int peer) {
  checkP2p("recv", t, peer);
  Call c{OpType::kRecv};
  c.dtype = t.scalar_type();
  c.numelOut = t.numel();
  c.arg = peer;
  c.bytesRecv = t.numel() * static_cast<int64_t>(t.element_size());
  c.shapes = shapeStr(t);
  run(c, [&] {
    if (verifying()) {
      at::Tensor fp = at::zeros({4}, at::TensorOptions().dtype(at::kLong).device(t.device()));
      doRecv(fp, peer);
      fp = fp.cpu();
      const int64_t* f = fp.data_ptr<int64_t>();
      if (f[0] != kFingerprintMagic || f[1] != static_cast<int64_t>(OpType::kSend) ||
          f[2] != static_cast<int64_t>(c.dtype) || f[3] != c.numelOut) {
        throw CollectiveMismatch(moe::str("send/recv mismatch on group '", name_, "': rank ", globalRanks_[peer],
                                     " sends ", f[0] == kFingerprintMagic ? dtypeName(static_cast<int32_t>(f[2])) : "?",
                                     " numel ", f[3], ", rank ", globalRanks_[rank_], " receives ",
                                     dtypeName(static_cast<int32_t>(c.dtype)), " numel ", c.numelOut));
      }
    }
    doRecv(t, peer);
  });
}

void Communicator::allGather(at::Tensor& out, const at::Tensor& in, const std::vector<int64_t>& rowsPerRankIn) {
  checkRowOp("all_gather", out, in);
  const int n = size();
  std::vector<int64_t> rows = rowsPerRankIn;
  if (rows.empty()) rows.assign(n, in.size(0));
  if (static_cast<int>(rows.size()) != n)
    fail("all_gather on group '", name_, "': ", rows.size(), " row counts for a group of ", n);
  if (rows[rank_] != in.size(0))
    fail("all_gather on group '", name_, "': rank ", globalRanks_[rank_], " input has ", in.size(0),
         " rows but rowsPerRank says ", rows[rank_]);
  int64_t total = std::accumulate(rows.begin(), rows.end(), int64_t{0});
  if (out.size(0) != total)
    fail("all_gather on group '", name_, "': output ", shapeStr(out), " needs ", total, " rows (",
         joinInts(rows), ")");
  Call c{OpType::kAllGather};
  c.dtype = in.scalar_type();
  c.numelIn = in.numel();
  c.numelOut = out.numel();
  int64_t rn = rowNumel(out);
  for (int64_t r : rows) c.to.push_back(r * rn);
  int64_t es = in.element_size();
  c.bytesSent = c.bytesRecv = (c.numelOut - c.numelIn) * es;
  c.shapes = "in " + shapeStr(in) + " -> out " + shapeStr(out);
  if (!rowsPerRankIn.empty()) c.splits = "rows " + joinInts(rows);
  run(c, [&] {
    if (n > 1) doAllGather(out, in, rows);
    else out.copy_(in);
  });
}

void Communicator::reduceScatter(at::Tensor& out, const at::Tensor& in, ReduceOp op,
                                 const std::vector<int64_t>& rowsPerRankIn) {
  checkRowOp("reduce_scatter", out, in);
  if (op != ReduceOp::kSum && op != ReduceOp::kAvg)
    fail("reduce_scatter on group '", name_, "': only sum and avg are supported, got ", reduceOpName(op));
  const int n = size();
  std::vector<int64_t> rows = rowsPerRankIn;
  if (rows.empty()) {
    if (in.size(0) % n != 0)
      fail("reduce_scatter on group '", name_, "': input ", shapeStr(in), " has ", in.size(0),
           " rows, not divisible by the group size ", n, "; pass rowsPerRank for uneven blocks");
    rows.assign(n, in.size(0) / n);
  }
  if (static_cast<int>(rows.size()) != n)
    fail("reduce_scatter on group '", name_, "': ", rows.size(), " row counts for a group of ", n);
  int64_t total = std::accumulate(rows.begin(), rows.end(), int64_t{0});
  if (in.size(0) != total)
    fail("reduce_scatter on group '", name_, "': input ", shapeStr(in), " needs ", total, " rows (",
         joinInts(rows), ")");
  if (out.size(0) != rows[rank_])
    fail("reduce_scatter on group '", name_, "': rank ", globalRanks_[rank_], " output ", shapeStr(out),
         " needs ", rows[rank_], " rows");
  Call c{OpType::kReduceScatter};
  c.dtype = in.scalar_type();
  c.numelIn = in.numel();
  c.numelOut = out.numel();
  c.arg = static_cast<int32_t>(op);
  int64_t rn = rowNumel(in);
  for (int64_t r : rows) c.to.push_back(r * rn);
  c.bytesSent = c.bytesRecv = (c.numelIn - c.numelOut) * static_cast<int64_t>(in.element_size());
  c.shapes = "in " + shapeStr(in) + " -> out " + shapeStr(out);
  if (!rowsPerRankIn.empty()) c.splits = "rows " + joinInts(rows);
  run(c, [&] {
    if (n > 1) doReduceScatter(out, in, op, rows);
    else out.copy_(in);
  });
}

void Communicator::allToAllSingle(at::Tensor& out, const at::Tensor& in, const std::vector<int64_t>& outSplitsIn,
                                  const std::vector<int64_t>& inSplitsIn) {
  checkRowOp("all_to_all", out, in);
  const int n = size();
  auto resolve = [&](const std::vector<int64_t>& s, const at::Tensor& t, const char* which) {
    std::vector<int64_t> v = s;
    if (v.empty()) {
      if (t.size(0) % n != 0)
        fail("all_to_all on group '", name_, "': ", which, " ", shapeStr(t), " rows not divisible by ", n,
             " and no split sizes given");
      v.assign(n, t.size(0) / n);
    }
    if (static_cast<int>(v.size()) != n)
      fail("all_to_all on group '", name_, "': ", v.size(), " ", which, " split sizes for a group of ", n);
    for (int64_t x : v)
      if (x < 0) fail("all_to_all on group '", name_, "': negative ", which, " split size ", x);
    int64_t total = std::accumulate(v.begin(), v.end(), int64_t{0});
    if (total != t.size(0))
      fail("all_to_all on group '", name_, "': ", which, " split sizes (", joinInts(v), ") sum to ", total,
           " but the ", which, " tensor ", shapeStr(t), " has ", t.size(0), " rows");
    return v;
  };
  std::vector<int64_t> inSplits = resolve(inSplitsIn, in, "input");
  std::vector<int64_t> outSplits = resolve(outSplitsIn, out, "output");
  Call c{OpType::kAllToAll};
  c.dtype = in.scalar_type();
  c.numelIn = in.numel();
  c.numelOut = out.numel();
  int64_t rin = rowNumel(in), rout = rowNumel(out);
  int64_t es = in.element_size();
  for (int j = 0; j < n; ++j) {
    c.to.push_back(inSplits[j] * rin);
    c.from.push_back(outSplits[j] * rout);
    if (j != rank_) {
      c.bytesSent += inSplits[j] * rin * es;
      c.bytesRecv += outSplits[j] * rout * es;
    }
  }
  c.shapes = "in " + shapeStr(in) + " -> out " + shapeStr(out);
  c.splits = "in " + joinInts(inSplits) + " out " + joinInts(outSplits);
  run(c, [&] {
    if (n > 1) doAllToAll(out, in, outSplits, inSplits);
    else out.copy_(in);
  });
}

std::shared_ptr<Communicator> Communicator::split(const std::string& name,
                                                  const std::vector<std::vector<int>>& groups) {
  auto it = children_.find(name);
  if (it != children_.end()) {
    if (it->second.first != groups)
      fail("group '", name, "' already exists on '", name_, "' with different ranks");
    return it->second.second;
  }
  std::vector<int> seen(size(), 0);
  int mine = -1;
  for (size_t g = 0; g < groups.size(); ++g) {
    if (groups[g].empty()) fail("split '", name, "': group ", g, " is empty");
    for (int r : groups[g]) {
      if (r < 0 || r >= size()) fail("split '", name, "': rank ", r, " is outside group '", name_, "' of size ", size());
      if (seen[r]++) fail("split '", name, "': rank ", r, " appears in more than one group");
      if (r == rank_) mine = static_cast<int>(g);
    }
  }
  // Sub-communicator names are unique per process so traces stay readable.
  std::string full = name_ == "world" ? name : name_ + "/" + name;
  auto child = doSplit(full, groups, mine);
  MOE_ASSERT((child != nullptr) == (mine >= 0), "backend returned a communicator for a non-member");
  children_[name] = {groups, child};
  return child;
}

std::shared_ptr<Communicator> Communicator::subgroup(const std::string& name, const std::vector<int>& ranks) {
  return split(name, {ranks});
}

}  // namespace moe::comm
