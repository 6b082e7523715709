#include "harness/comm/flight_recorder.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/error.h"

namespace moe::comm {
namespace {

constexpr char kMagic[8] = {'M', 'O', 'E', 'T', 'R', 'A', 'C', 'E'};
constexpr uint32_t kVersion = 2;  // 2: fingerprints in records, launcher words in the header
constexpr uint32_t kCapacity = 256;
const char* const kMemoryOnly = "-";  // configure(): ignore MOE_HARNESS_TRACE_DIR

size_t fileBytes(uint32_t capacity) {
  return sizeof(TraceFileHeader) + capacity * sizeof(TraceRecord);
}

std::string scalarName(int32_t dtype) { return dtypeName(dtype); }

std::string fixed(const char* s, size_t n) { return std::string(s, strnlen(s, n)); }

std::string rankList(const std::vector<int>& ranks) {
  std::string out = ranks.size() == 1 ? "rank " : "ranks ";
  for (size_t i = 0; i < ranks.size(); ++i) out += (i ? "," : "") + std::to_string(ranks[i]);
  return out;
}

}  // namespace

const char* callStateName(CallState s) {
  switch (s) {
    case CallState::kEmpty: return "empty";
    case CallState::kVerifying: return "verifying";
    case CallState::kRunning: return "running";
    case CallState::kCompleted: return "completed";
    case CallState::kFailed: return "failed";
  }
  return "?";
}

FlightRecorder& FlightRecorder::instance() {
  static FlightRecorder* recorder = new FlightRecorder();  // never destroyed: used until exit
  return *recorder;
}

FlightRecorder::FlightRecorder() { configure(0, 1, kMemoryOnly); }

FlightRecorder::~FlightRecorder() { unmap(); }

void FlightRecorder::unmap() {
  if (mappedBytes_ && header_) munmap(header_, mappedBytes_);
  mappedBytes_ = 0;
}

void FlightRecorder::configure(int rank, int worldSize, const std::string& traceDir) {
  std::lock_guard<std::mutex> lock(mu_);
  rank_ = rank;
  worldSize_ = worldSize;
  std::string dir = traceDir == kMemoryOnly ? "" : traceDir;
  if (traceDir.empty()) {
    const char* env = std::getenv("MOE_HARNESS_TRACE_DIR");
    if (env) dir = env;
  }
  // Reconfiguring starts an empty ring (in a new file or in memory). Let a
  // watching launcher read the old one first, so no call escapes
  // verification.
  if (mappedBytes_ && header_->watcher) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    while (__atomic_load_n(&header_->watched, __ATOMIC_ACQUIRE) < header_->count &&
           std::chrono::steady_clock::now() < deadline)
      usleep(500);
  }
  unmap();
  if (!dir.empty()) {
    std::string path = dir + "/rank" + std::to_string(rank) + ".trace";
    int fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) fail("flight recorder: cannot create trace file ", path, ": ", strerror(errno));
    size_t bytes = fileBytes(kCapacity);
    if (ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
      close(fd);
      fail("flight recorder: cannot size trace file ", path, ": ", strerror(errno));
    }
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) fail("flight recorder: cannot map ", path, ": ", strerror(errno));
    mappedBytes_ = bytes;
    header_ = static_cast<TraceFileHeader*>(p);
    ring_ = reinterpret_cast<TraceRecord*>(static_cast<uint8_t*>(p) + sizeof(TraceFileHeader));
  } else {
    memory_.assign(fileBytes(kCapacity), 0);
    header_ = reinterpret_cast<TraceFileHeader*>(memory_.data());
    ring_ = reinterpret_cast<TraceRecord*>(memory_.data() + sizeof(TraceFileHeader));
  }
  memcpy(header_->magic, kMagic, sizeof(kMagic));
  header_->version = kVersion;
  header_->rank = rank;
  header_->worldSize = worldSize;
  header_->pid = getpid();
  header_->capacity = kCapacity;
  header_->count = 0;
  gethostname(header_->host, sizeof(header_->host) - 1);
  header_->watcher = 0;
  header_->verdictPosted = 0;
  header_->watched = 0;
  header_->verified = 0;
  header_->verdict[0] = 0;
  header_->epoch = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
}

TraceRecord* FlightRecorder::begin(const TraceRecord& rec) {
  std::unique_lock<std::mutex> lock(mu_);
  uint64_t id = header_->count + 1;
  // Back-pressure (flight_recorder.h): never overwrite a record the watching
  // launcher has not read. It reads every few tens of milliseconds, so this
  // waits only when a rank issues hundreds of calls in that time; a posted
  // verdict ends the wait (the call then fails with it).
  while (__atomic_load_n(&header_->watcher, __ATOMIC_ACQUIRE) &&
         id > __atomic_load_n(&header_->watched, __ATOMIC_ACQUIRE) + kTraceSlack &&
         !__atomic_load_n(&header_->verdictPosted, __ATOMIC_ACQUIRE)) {
    lock.unlock();
    usleep(200);
    lock.lock();
    id = header_->count + 1;
  }
  TraceRecord* slot = &ring_[(id - 1) % header_->capacity];
  *slot = rec;
  slot->id = id;
  // Publish the record before the count, so a reader that sees the count
  // sees the record.
  __atomic_store_n(&header_->count, id, __ATOMIC_RELEASE);
  return slot;
}

void FlightRecorder::setState(TraceRecord* slot, CallState s, const std::string& error) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!error.empty()) {
    std::string line = error.substr(0, error.find('\n'));
    strncpy(slot->error, line.c_str(), sizeof(slot->error) - 1);
  }
  __atomic_store_n(&slot->state, static_cast<int32_t>(s), __ATOMIC_RELEASE);
}

std::string FlightRecorder::verdict() const {
  if (!__atomic_load_n(&header_->verdictPosted, __ATOMIC_ACQUIRE)) return "";
  return fixed(header_->verdict, sizeof(header_->verdict));
}

std::string FlightRecorder::settleVerification(double boundSeconds) {
  if (!fileBacked() || !__atomic_load_n(&header_->watcher, __ATOMIC_ACQUIRE)) return "";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(boundSeconds);
  std::string v;
  while ((v = verdict()).empty() &&
         __atomic_load_n(&header_->verified, __ATOMIC_ACQUIRE) < __atomic_load_n(&header_->count, __ATOMIC_ACQUIRE) &&
         std::chrono::steady_clock::now() < deadline)
    usleep(500);
  if (v.empty()) return "";
  std::lock_guard<std::mutex> lock(mu_);
  const uint64_t count = header_->count;
  if (count > 0) {
    TraceRecord* last = &ring_[(count - 1) % header_->capacity];
    if (last->state == static_cast<int32_t>(CallState::kCompleted)) {
      strncpy(last->error, v.c_str(), sizeof(last->error) - 1);
      __atomic_store_n(&last->state, static_cast<int32_t>(CallState::kFailed), __ATOMIC_RELEASE);
    }
  }
  return v;
}

void FlightRecorder::failInFlight(const std::string& error) {
  std::unique_lock<std::mutex> lock(mu_, std::try_to_lock);
  if (!lock.owns_lock() || header_->count == 0) return;
  TraceRecord* last = &ring_[(header_->count - 1) % header_->capacity];
  const auto st = static_cast<CallState>(last->state);
  if (st != CallState::kVerifying && st != CallState::kRunning) return;
  strncpy(last->error, error.c_str(), sizeof(last->error) - 1);
  __atomic_store_n(&last->state, static_cast<int32_t>(CallState::kFailed), __ATOMIC_RELEASE);
}

std::vector<TraceRecord> FlightRecorder::snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<TraceRecord> out;
  uint64_t count = header_->count;
  uint64_t first = count > header_->capacity ? count - header_->capacity : 0;
  for (uint64_t id = first + 1; id <= count; ++id) out.push_back(ring_[(id - 1) % header_->capacity]);
  return out;
}

nlohmann::json FlightRecorder::toJson() const {
  RankTrace t;
  t.rank = rank_;
  t.pid = header_->pid;
  t.host = fixed(header_->host, sizeof(header_->host));
  t.records = snapshot();
  return traceToJson(t);
}

std::map<std::pair<std::string, OpType>, OpCounter> FlightRecorder::counters() const {
  std::lock_guard<std::mutex> lock(mu_);
  return counters_;
}

OpCounter FlightRecorder::counter(const std::string& group, OpType op) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = counters_.find({group, op});
  return it == counters_.end() ? OpCounter{} : it->second;
}

void FlightRecorder::resetCounters() {
  std::lock_guard<std::mutex> lock(mu_);
  counters_.clear();
}

void FlightRecorder::count(const std::string& group, OpType op, int64_t sent, int64_t recv,
                           double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  OpCounter& c = counters_[{group, op}];
  c.calls += 1;
  c.bytesSent += sent;
  c.bytesRecv += recv;
  c.seconds += seconds;
}

// --- reading ---------------------------------------------------------------

RankTrace readTraceFile(const std::string& path) {
  RankTrace t;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    t.error = "no trace file " + path + " (the rank never configured its flight recorder)";
    return t;
  }
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.size() < sizeof(TraceFileHeader)) {
    t.error = "trace file " + path + " is truncated";
    return t;
  }
  TraceFileHeader h;
  memcpy(&h, bytes.data(), sizeof(h));
  if (memcmp(h.magic, kMagic, sizeof(kMagic)) != 0 || h.version != kVersion ||
      bytes.size() < fileBytes(h.capacity)) {
    t.error = "trace file " + path + " has a bad header";
    return t;
  }
  t.rank = h.rank;
  t.pid = h.pid;
  t.host = fixed(h.host, sizeof(h.host));
  const auto* ring = reinterpret_cast<const TraceRecord*>(bytes.data() + sizeof(TraceFileHeader));
  uint64_t first = h.count > h.capacity ? h.count - h.capacity : 0;
  for (uint64_t id = first + 1; id <= h.count; ++id) {
    TraceRecord r;
    memcpy(&r, &ring[(id - 1) % h.capacity], sizeof(r));
    if (r.id == id) t.records.push_back(r);  // skip a slot torn by a concurrent write
  }
  return t;
}

std::vector<RankTrace> readTraceDir(const std::string& dir, int worldSize) {
  std::vector<RankTrace> out;
  for (int r = 0; r < worldSize; ++r) {
    RankTrace t = readTraceFile(dir + "/rank" + std::to_string(r) + ".trace");
    t.rank = r;
    out.push_back(std::move(t));
  }
  return out;
}

nlohmann::json traceToJson(const RankTrace& t) {
  nlohmann::json j;
  j["rank"] = t.rank;
  j["pid"] = t.pid;
  j["host"] = t.host;
  if (!t.error.empty()) j["error"] = t.error;
  auto& calls = j["collectives"] = nlohmann::json::array();
  for (const auto& r : t.records) {
    nlohmann::json c;
    c["id"] = r.id;
    c["seq"] = r.seq;
    c["op"] = opName(static_cast<OpType>(r.op));
    c["group"] = fixed(r.group, sizeof(r.group));
    c["group_ranks"] = fixed(r.ranks, sizeof(r.ranks));
    c["group_size"] = r.groupSize;
    c["dtype"] = scalarName(r.dtype);
    c["shapes"] = fixed(r.shapes, sizeof(r.shapes));
    c["splits"] = fixed(r.splits, sizeof(r.splits));
    c["arg"] = r.arg;
    c["bytes_sent"] = r.bytesSent;
    c["bytes_recv"] = r.bytesRecv;
    c["t_start"] = r.tStart;
    c["t_end"] = r.tEnd;
    c["state"] = callStateName(static_cast<CallState>(r.state));
    if (r.error[0]) c["error"] = fixed(r.error, sizeof(r.error));
    calls.push_back(std::move(c));
  }
  return j;
}

std::string describeRecord(const TraceRecord& r) {
  return moe::str(opName(static_cast<OpType>(r.op)), "#", r.seq, " on group ", fixed(r.group, sizeof(r.group)));
}

std::string formatTraceTable(const std::vector<RankTrace>& traces, int lastN) {
  std::ostringstream os;
  os << "last collectives per rank (oldest first):\n";
  for (const auto& t : traces) {
    os << "  rank " << t.rank;
    if (!t.error.empty()) {
      os << ": " << t.error << "\n";
      continue;
    }
    if (t.records.empty()) {
      os << ": no collective recorded\n";
      continue;
    }
    os << " (pid " << t.pid << "):\n";
    size_t from = t.records.size() > static_cast<size_t>(lastN) ? t.records.size() - lastN : 0;
    for (size_t i = from; i < t.records.size(); ++i) {
      const auto& r = t.records[i];
      os << "      " << describeRecord(r) << " [" << callStateName(static_cast<CallState>(r.state))
         << "] " << scalarName(r.dtype) << " " << fixed(r.shapes, sizeof(r.shapes));
      if (r.splits[0]) os << " splits " << fixed(r.splits, sizeof(r.splits));
      if (r.error[0]) os << " error: " << fixed(r.error, sizeof(r.error));
      os << "\n";
    }
  }
  return os.str();
}

std::string diagnoseDivergence(const std::vector<RankTrace>& traces) {
  // Key each rank by the call it is in or last finished; ranks with the same
  // key agree, several keys mean the ranks diverged.
  std::map<std::string, std::vector<int>> byCall;
  std::vector<std::string> order;
  for (const auto& t : traces) {
    std::string key = "no recorded collective";
    if (t.error.empty() && !t.records.empty()) {
      const auto& r = t.records.back();
      switch (static_cast<CallState>(r.state)) {
        case CallState::kCompleted: key = "done with " + describeRecord(r); break;
        case CallState::kFailed: key = "failed in " + describeRecord(r); break;
        default: key = "in " + describeRecord(r); break;
      }
    }
    if (!byCall.count(key)) order.push_back(key);
    byCall[key].push_back(t.rank);
  }
  if (byCall.size() <= 1) return "";
  std::string out;
  for (const auto& key : order) {
    const auto& ranks = byCall[key];
    if (!out.empty()) out += "; ";
    bool one = ranks.size() == 1;
    bool has = key.rfind("no ", 0) == 0;
    out += rankList(ranks) + (has ? (one ? " has " : " have ") : (one ? " is " : " are ")) + key;
  }
  return out;
}

std::string diagnoseDeadlock(const std::vector<RankTrace>& traces, const std::vector<bool>& exited) {
  MOE_ASSERT_EQ(traces.size(), exited.size());
  // The call each blocked rank is in, keyed by what makes it one call.
  std::map<std::string, std::vector<int>> inCall;  // key -> ranks inside it
  std::map<std::string, std::vector<int>> members;  // key -> the group's global ranks
  std::map<std::string, std::string> described;
  std::vector<std::string> order;
  for (size_t i = 0; i < traces.size(); ++i) {
    if (exited[i]) continue;
    const auto& t = traces[i];
    if (!t.error.empty() || t.records.empty()) return "";
    const auto& r = t.records.back();
    const auto st = static_cast<CallState>(r.state);
    if (st != CallState::kVerifying && st != CallState::kRunning) return "";  // computing, or done
    // A send and its recv are different records of one transfer: not keyed here.
    if (r.op == static_cast<int32_t>(OpType::kSend) || r.op == static_cast<int32_t>(OpType::kRecv)) return "";
    std::vector<int> group;
    std::stringstream ranks(fixed(r.ranks, sizeof(r.ranks)));
    for (std::string item; std::getline(ranks, item, ',');) {
      try {
        group.push_back(std::stoi(item));
      } catch (const std::exception&) {
        return "";
      }
    }
    if (static_cast<int>(group.size()) != r.groupSize) return "";  // member list truncated
    const std::string key = moe::str(fixed(r.group, sizeof(r.group)), "|", fixed(r.ranks, sizeof(r.ranks)), "|",
                                     r.op, "|", r.seq);
    if (!inCall.count(key)) order.push_back(key);
    inCall[key].push_back(t.rank);
    members[key] = group;
    described[key] = describeRecord(r);
  }
  if (inCall.empty()) return "";
  for (const auto& [key, ranks] : inCall)
    if (ranks.size() == members[key].size()) return "";  // every member is there: it can complete
  std::string out;
  for (const auto& key : order) {
    const auto& ranks = inCall[key];
    std::vector<int> missing;
    for (int m : members[key])
      if (std::find(ranks.begin(), ranks.end(), m) == ranks.end()) missing.push_back(m);
    if (!out.empty()) out += "; ";
    out += moe::str(rankList(ranks), ranks.size() == 1 ? " is" : " are", " blocked in ", described[key],
                    " waiting for ", rankList(missing));
  }
  return out;
}

int64_t ringBytesSent(comm::OpType op, int64_t payloadBytes, int n, bool isRoot) {
  if (n <= 1) return 0;
  switch (op) {
    case comm::OpType::kAllReduce: return 2 * (n - 1) * payloadBytes / n;
    case comm::OpType::kAllGather:
    case comm::OpType::kReduceScatter: return (n - 1) * payloadBytes / n;
    case comm::OpType::kBroadcast: return isRoot ? payloadBytes : 0;
    default: moe::fail("ringBytesSent: no formula for ", comm::opName(op), "; give the bytes explicitly");
  }
}

}  // namespace moe::comm
