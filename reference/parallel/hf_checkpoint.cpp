#include "reference/parallel/hf_checkpoint.h"

#include <filesystem>
#include <system_error>

#include "common/error.h"
#include "reference/io/dist_checkpoint.h"
#include "reference/io/safetensors.h"
#include "reference/io/sharded_safetensors.h"
#include "reference/parallel/dist_checkpoint.h"
#include "reference/train/hub_naming.h"

namespace moe::parallel {
namespace fs = std::filesystem;

namespace {
const char* kMomentPrefixes[] = {kExpAvgPrefix, kExpAvgSqPrefix};

bool isMoment(const std::string& name) {
  return name.rfind(kExpAvgPrefix, 0) == 0 || name.rfind(kExpAvgSqPrefix, 0) == 0;
}

void removeAll(const fs::path& p) {
  std::error_code ec;
  fs::remove_all(p, ec);
}
}  // namespace

void writeHfCheckpoint(const io::TensorSource& fused, const ref::ModelConfig& config,
                       const std::vector<std::string>& paramNames, const HfWriteOptions& options) {
  MOE_ASSERT(!options.dir.empty(), "writeHfCheckpoint without a directory");
  const fs::path dir = fs::path(options.dir).lexically_normal();
  const fs::path tmp = dir.string() + ".tmp";
  const std::string where = "checkpoint " + dir.string();
  removeAll(tmp);  // a save interrupted earlier
  std::error_code ec;
  fs::create_directories(tmp, ec);
  if (ec) fail(where, ": cannot create ", tmp.string(), ": ", ec.message());

  // Parameters: read whole (a DistCheckpointSource refuses a range its
  // pieces do not cover exactly once), hashed as fused fp32 tensors, then
  // written in the family's hub naming.
  nlohmann::json hashes = nlohmann::json::object();
  std::vector<std::pair<std::string, at::Tensor>> params;
  uint64_t bytes = 0;
  for (const auto& name : paramNames) {
    if (!fused.has(name)) fail(where, ": the saved state has no parameter '", name, "'");
    at::Tensor t = fused.read(name).to(at::kFloat).contiguous();
    hashes[name] = io::contentHash(t);
    bytes += static_cast<uint64_t>(t.numel()) * t.element_size();
    params.emplace_back(name, std::move(t));
  }
  const auto hub = io::toHubLayout(params, where, ref::hubExpertNames(config));
  params.clear();
  if (bytes <= options.maxShardBytes)
    io::writeSafetensors((tmp / "model.safetensors").string(), hub);
  else
    io::writeShardedSafetensors(tmp.string(), hub, options.maxShardBytes);

  std::vector<std::pair<std::string, at::Tensor>> moments;
  for (const char* prefix : kMomentPrefixes)
    for (const auto& name : paramNames) {
      const std::string key = prefix + name;
      if (!fused.has(key)) fail(where, ": the saved state has no optimizer moment '", key, "'");
      at::Tensor t = fused.read(key).to(at::kFloat).contiguous();
      hashes[key] = io::contentHash(t);
      moments.emplace_back(key, std::move(t));
    }
  io::writeSafetensors((tmp / kHfOptimizerFile).string(), moments);
  moments.clear();

  // The harness's own experts_implementation ("grouped" | "loop", how the
  // reference computes the experts, not what they are) is left out:
  // transformers 5 reads that name as its own kernel choice and refuses
  // both values. trainer_state.json's info.config keeps it.
  nlohmann::json hfConfig = config.toJson();
  hfConfig.erase("experts_implementation");
  io::writeTextAtomically(tmp.string(), "config.json", hfConfig.dump(2) + "\n");
  // Last inside the directory: it is what marks a consolidated checkpoint.
  io::writeTextAtomically(tmp.string(), kHfTrainerStateFile,
                          nlohmann::json{{"format", kHfFormat}, {"info", options.info}, {"hashes", hashes}}.dump(1) +
                              "\n");

  // An earlier checkpoint at DIR is replaced only once the new one is whole.
  const fs::path old = dir.string() + ".old";
  removeAll(old);
  if (fs::exists(dir)) {
    fs::rename(dir, old, ec);
    if (ec) fail(where, ": cannot move the earlier checkpoint aside: ", ec.message());
  }
  fs::rename(tmp, dir, ec);
  if (ec) fail(where, ": cannot rename ", tmp.string(), " into place: ", ec.message());
  removeAll(old);
}

bool isHfCheckpoint(const std::string& dir) { return fs::is_regular_file(fs::path(dir) / kHfTrainerStateFile); }

HfCheckpointSource::HfCheckpointSource(const std::string& dir, const io::FusedViewOptions& view) : dir_(dir) {
  const fs::path state = fs::path(dir) / kHfTrainerStateFile;
  if (!fs::is_regular_file(state)) fail(dir, ": no ", kHfTrainerStateFile, " (not a consolidated training checkpoint)");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(io::readText(state.string()));
  } catch (const nlohmann::json::exception& e) {
    fail(state.string(), ": malformed JSON: ", e.what());
  }
  if (!j.is_object() || j.value("format", std::string()) != kHfFormat)
    fail(state.string(), ": format is ", j.is_object() && j.contains("format") ? j["format"].dump() : "absent",
         ", expected \"", kHfFormat, "\"");
  if (!j.contains("info") || !j["info"].is_object()) fail(state.string(), ": no \"info\" object");
  if (!j.contains("hashes") || !j["hashes"].is_object()) fail(state.string(), ": no \"hashes\" object");
  info_ = j["info"];
  hashes_ = j["hashes"];
  const fs::path opt = fs::path(dir) / kHfOptimizerFile;
  if (!fs::is_regular_file(opt)) fail(dir, ": no ", kHfOptimizerFile, " (the AdamW moments)");
  modelFiles_ = io::openCheckpoint(dir);
  model_ = std::make_unique<io::FusedExpertView>(*modelFiles_, view);
  optimizer_ = std::make_unique<io::SafetensorsReader>(opt.string());
}

HfCheckpointSource::~HfCheckpointSource() = default;

const io::TensorSource& HfCheckpointSource::sourceOf(const std::string& name) const {
  return isMoment(name) ? *optimizer_ : static_cast<const io::TensorSource&>(*model_);
}

std::string HfCheckpointSource::whereOf(const std::string& name) const { return sourceOf(name).whereOf(name); }

std::vector<std::string> HfCheckpointSource::names() const {
  auto out = model_->names();
  for (auto& n : optimizer_->names()) out.push_back(n);
  return out;
}

bool HfCheckpointSource::has(const std::string& name) const { return sourceOf(name).has(name); }

std::vector<int64_t> HfCheckpointSource::shape(const std::string& name) const { return sourceOf(name).shape(name); }

at::ScalarType HfCheckpointSource::scalarType(const std::string& name) const {
  return sourceOf(name).scalarType(name);
}

at::Tensor HfCheckpointSource::readSlice(const std::string& name, const std::vector<io::SliceRange>& ranges) const {
  return sourceOf(name).readSlice(name, ranges);
}

std::string HfCheckpointSource::verifyAllHashes() const {
  for (const auto& [name, recorded] : hashes_.items()) {
    if (!has(name)) return str("tensor '", name, "' is listed in ", kHfTrainerStateFile, " but not in the files");
    const std::string h = io::contentHash(read(name).to(at::kFloat).contiguous());
    if (!recorded.is_string() || h != recorded.get<std::string>())
      return str("tensor '", name, "' (", whereOf(name), "): content hash ", h, ", ", kHfTrainerStateFile, " says ",
                 recorded.dump());
  }
  for (const auto& name : names())
    if (!hashes_.contains(name)) return str("tensor '", name, "' has no hash in ", kHfTrainerStateFile);
  return "";
}

ResumeCheckpoint openResumeCheckpoint(const std::string& dir, const io::FusedViewOptions& view) {
  ResumeCheckpoint r;
  if (isHfCheckpoint(dir)) {
    auto hf = std::make_unique<HfCheckpointSource>(dir, view);
    r.info = hf->info();
    r.source = std::move(hf);
    r.layout = "hf";
    return r;
  }
  // Anything else is read as the sharded layout, whose errors say what is
  // missing (no COMPLETE, which rank files never arrived, no directory).
  auto d = std::make_unique<io::DistCheckpointSource>(dir);
  r.info = d->meta().info;
  r.source = std::move(d);
  r.layout = "sharded";
  return r;
}

}  // namespace moe::parallel
