#include "harness/conformance/reference_cache.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <sstream>

#include "harness/checks/check_common.h"
#include "common/error.h"
#include "common/json_number.h"
#include "reference/io/safetensors.h"

namespace moe::ref {
namespace fs = std::filesystem;
namespace {

// The running binary's identity: a rebuilt harness may compute a different
// reference, so its entries must not be reused.
nlohmann::json binaryIdentity() {
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  struct stat st {};
  if (ec || stat(exe.c_str(), &st) != 0) return "unknown";
  return {{"path", exe.string()}, {"size", static_cast<int64_t>(st.st_size)},
          {"mtime_ns", static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec}};
}

nlohmann::json inputsJson(const ReferenceKey& k) {
  const TrainOptions& t = k.train;
  return {{"config", k.config},
          {"dtype", k.dtype},
          {"steps", t.steps},
          {"seed", t.seed},
          {"batch_size", t.batchSize},
          {"seq_len", t.seqLen},
          {"adamw", {t.adamw.lr, t.adamw.beta1, t.adamw.beta2, t.adamw.eps, t.adamw.weightDecay}},
          {"max_grad_norm", t.maxGradNorm},
          {"checkpoint", k.checkpoint},
          {"binary", binaryIdentity()}};
}

std::vector<std::pair<std::string, at::Tensor>> entries(const ParamMap& m) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& kv : m) out.emplace_back(kv.key(), kv.value());
  return out;
}

ParamMap readAll(const std::string& path) {
  io::SafetensorsReader r(path);
  ParamMap m;
  for (const auto& name : r.names()) m.insert(name, r.read(name));
  return m;
}

}  // namespace

std::string ReferenceCache::key(const ReferenceKey& k) {
  // dump() sorts object keys, so equal inputs give equal text.
  const std::string text = inputsJson(k).dump();
  std::ostringstream os;
  os << std::hex << std::setw(16) << std::setfill('0') << static_cast<uint64_t>(checks::hashString(text));
  // A second, differently seeded digest makes accidental collisions of the
  // 64-bit FNV hash irrelevant in practice.
  os << std::setw(16) << checks::fnv1a64(text.data(), text.size(), 0x84222325cbf29ce4ULL);
  return os.str();
}

ReferenceCache::KeyLock::~KeyLock() {
  if (fd_ >= 0) close(fd_);  // closing the descriptor releases the flock
}

std::unique_ptr<ReferenceCache::KeyLock> ReferenceCache::lock(const std::string& key) const {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) fail("reference cache ", dir_, ": cannot create the directory: ", ec.message());
  const std::string path = (fs::path(dir_) / (key + ".lock")).string();
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) fail("reference cache ", path, ": cannot open the lock file: ", std::strerror(errno));
  while (flock(fd, LOCK_EX) != 0) {
    if (errno == EINTR) continue;
    const int e = errno;
    close(fd);
    fail("reference cache ", path, ": cannot lock: ", std::strerror(e));
  }
  return std::make_unique<KeyLock>(fd);
}

bool ReferenceCache::has(const std::string& key) const { return fs::exists(fs::path(entryDir(key)) / "steps.json"); }

std::string ReferenceCache::entryDir(const std::string& key) const { return (fs::path(dir_) / key).string(); }

std::vector<StepRecord> ReferenceCache::loadSteps(const std::string& key) const {
  const fs::path path = fs::path(entryDir(key)) / "steps.json";
  std::ifstream in(path);
  if (!in) fail("reference cache ", path.string(), ": cannot read");
  nlohmann::json j;
  try {
    in >> j;
  } catch (const nlohmann::json::exception& e) {
    fail("reference cache ", path.string(), ": ", e.what());
  }
  std::vector<StepRecord> steps;
  for (const auto& s : j.at("steps")) {
    StepRecord rec;
    rec.step = s.at("step");
    rec.loss = numberOf(s.at("loss"), "loss");
    rec.ce = numberOf(s.at("ce"), "ce");
    rec.aux = numberOf(s.at("aux"), "aux");
    rec.gradNorm = numberOf(s.at("grad_norm"), "grad_norm");
    steps.push_back(rec);
  }
  return steps;
}

void ReferenceCache::storeReferenceRun(const std::string& key, const ReferenceKey& inputs,
                                       const std::string& runDir) const {
  const fs::path run = runDir;
  const fs::path losses = run / "losses.json";
  std::ifstream in(losses);
  if (!in) fail("reference cache: ", losses.string(), ": cannot read (not a reference run's output?)");
  nlohmann::json l;
  try {
    in >> l;
  } catch (const nlohmann::json::exception& e) {
    fail("reference cache: ", losses.string(), ": ", e.what());
  }
  nlohmann::json j;
  j["inputs"] = inputsJson(inputs);
  j["steps"] = nlohmann::json::array();
  for (const auto& s : l.at("steps"))
    j["steps"].push_back({{"step", s.at("step")}, {"loss", s.at("loss")}, {"ce", s.at("ce")}, {"aux", s.at("aux")},
                          {"grad_norm", s.at("grad_norm")}});
  fs::rename(run / "model_final.safetensors", run / "final.safetensors");
  for (const char* unused : {"model.safetensors", "losses.json", "batches.safetensors", "config.json"})
    fs::remove(run / unused);
  std::ofstream(run / "steps.json") << dumpJson(j, 1) << "\n";
  const fs::path entry = entryDir(key);
  if (fs::exists(entry) || std::rename(run.c_str(), entry.c_str()) != 0) fs::remove_all(run);
}

std::optional<TrainResult> ReferenceCache::load(const std::string& key) const {
  const fs::path entry = fs::path(dir_) / key;
  if (!fs::exists(entry / "steps.json")) return std::nullopt;
  std::ifstream in(entry / "steps.json");
  nlohmann::json j;
  try {
    in >> j;
  } catch (const nlohmann::json::exception& e) {
    fail("reference cache ", (entry / "steps.json").string(), ": ", e.what());
  }
  TrainResult r;
  for (const auto& s : j.at("steps")) {
    StepRecord rec;
    rec.step = s.at("step");
    // Non-finite values are stored as "nan" / "inf" / "-inf" (json_number.h).
    rec.loss = numberOf(s.at("loss"), "loss");
    rec.ce = numberOf(s.at("ce"), "ce");
    rec.aux = numberOf(s.at("aux"), "aux");
    rec.gradNorm = numberOf(s.at("grad_norm"), "grad_norm");
    r.steps.push_back(rec);
  }
  r.gradsStep1 = readAll((entry / "grads_step1.safetensors").string());
  r.finalParams = readAll((entry / "final.safetensors").string());
  return r;
}

void ReferenceCache::store(const std::string& key, const ReferenceKey& inputs, const TrainResult& result) const {
  fs::create_directories(dir_);
  const fs::path entry = fs::path(dir_) / key;
  if (fs::exists(entry)) return;
  const fs::path tmp = fs::path(dir_) / moe::str(".tmp-", key, "-", getpid());
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  io::writeSafetensors((tmp / "grads_step1.safetensors").string(), entries(result.gradsStep1));
  io::writeSafetensors((tmp / "final.safetensors").string(), entries(result.finalParams));
  nlohmann::json j;
  j["inputs"] = inputsJson(inputs);
  j["steps"] = nlohmann::json::array();
  for (const auto& s : result.steps)
    j["steps"].push_back({{"step", s.step}, {"loss", s.loss}, {"ce", s.ce}, {"aux", s.aux}, {"grad_norm", s.gradNorm}});
  std::ofstream(tmp / "steps.json") << dumpJson(j, 1) << "\n";
  // rename(2) of a directory onto an existing non-empty one fails: the entry
  // another job stored first is kept, ours is dropped.
  if (std::rename(tmp.c_str(), entry.c_str()) != 0) fs::remove_all(tmp);
}

}  // namespace moe::ref
