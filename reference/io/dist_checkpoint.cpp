#include "reference/io/dist_checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/error.h"

namespace moe::io {
namespace fs = std::filesystem;
using nlohmann::json;

std::string contentHash(const at::Tensor& t) {
  auto c = t.detach().to(at::kCPU).contiguous();
  const auto* p = static_cast<const uint8_t*>(c.data_ptr());
  const size_t n = static_cast<size_t>(c.numel()) * c.element_size();
  uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a 64 offset basis
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ULL;  // FNV 64 prime
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

std::string rankFileName(int rank) { return "rank" + std::to_string(rank) + ".safetensors"; }

namespace {

std::string pieceKey(const std::string& tensor, const std::vector<int64_t>& offsets) {
  std::string k = tensor + "@";
  for (size_t i = 0; i < offsets.size(); ++i) k += (i ? "," : "") + std::to_string(offsets[i]);
  return k;
}

std::string shapeText(const std::vector<int64_t>& v) { return formatShape(v); }

// Test-only fault injection (harness/tests/save_kill_test.cpp): with
// MOE_HARNESS_TEST_KILL_IN_SAVE="<rank>:<point>" in its environment, rank
// <rank> SIGKILLs itself inside writeRankPieces at <point>:
//   "tmp"      its rank file is complete under a temporary name
//              ("rank<r>.safetensors.tmp.kill") and never renamed: the final
//              name does not appear;
//   "renamed"  its rank file is in place and journaled, before the ranks
//              agree that every rank file exists (so no metadata.json and no
//              COMPLETE).
// Any other value is a HarnessError naming the variable. Unset: no effect.
constexpr const char* kSaveKillEnv = "MOE_HARNESS_TEST_KILL_IN_SAVE";

// kSaveKillEnv's point for `rank`: "" when the variable is unset or names
// another rank.
std::string saveKillPoint(int rank) {
  const char* v = std::getenv(kSaveKillEnv);
  if (!v || !*v) return "";
  const std::string text = v;
  const auto colon = text.find(':');
  const std::string point = colon == std::string::npos ? "" : text.substr(colon + 1);
  int target = -1;
  try {
    size_t used = 0;
    target = std::stoi(text.substr(0, colon), &used);
    if (used != colon) target = -1;
  } catch (const std::exception&) {
  }
  if (target < 0 || (point != "tmp" && point != "renamed"))
    fail(kSaveKillEnv, "='", text, "': expected <rank>:tmp or <rank>:renamed");
  return target == rank ? point : "";
}

[[noreturn]] void killSelf(int rank, const std::string& point) {
  std::fprintf(stderr, "rank %d: %s=%d:%s, killing myself with SIGKILL\n", rank, kSaveKillEnv, rank, point.c_str());
  std::fflush(stderr);
  ::raise(SIGKILL);
  std::abort();  // unreachable: SIGKILL cannot be caught
}

// " (its 12 pieces: a@0,0, b@4 and 10 more)" from rank r's piece list, or
// " (its piece list was never written either)".
std::string missingPiecesText(const std::string& dir, int r) {
  const std::string path = dir + "/" + piecesListName(r);
  if (!fs::exists(path)) return " (its piece list was never written either)";
  json j;
  try {
    j = json::parse(readText(path));
  } catch (const json::exception&) {
    return str(" (", piecesListName(r), " is unreadable)");
  }
  const auto& list = j.contains("pieces") && j["pieces"].is_array() ? j["pieces"] : json::array();
  std::string names;
  const size_t shown = std::min<size_t>(list.size(), 4);
  for (size_t i = 0; i < shown; ++i) names += (i ? ", " : "") + list[i].get<std::string>();
  if (list.size() > shown) names += str(" and ", list.size() - shown, " more");
  return str(" (its ", list.size(), " pieces: ", names.empty() ? std::string("none") : names, ")");
}

}  // namespace

void writeTextAtomically(const std::string& dir, const std::string& name, const std::string& text) {
  const std::string path = dir + "/" + name, tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) fail("checkpoint ", dir, ": cannot write ", tmp);
    out << text;
    out.flush();
    if (!out) fail("checkpoint ", dir, ": cannot write ", tmp);
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) fail("checkpoint ", dir, ": cannot rename ", tmp, " to ", name, ": ", ec.message());
}

std::string readText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("checkpoint: cannot read ", path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string piecesListName(int rank) { return "rank" + std::to_string(rank) + ".pieces.json"; }

void appendJournal(const std::string& dir, int rank, const std::string& file) {
  const std::string line = "rank " + std::to_string(rank) + " " + file + "\n";
  const std::string path = dir + "/" + kDistJournalFile;
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (fd < 0) fail("checkpoint ", dir, ": cannot open ", path);
  const ssize_t n = ::write(fd, line.data(), line.size());
  ::close(fd);
  if (n != static_cast<ssize_t>(line.size())) fail("checkpoint ", dir, ": cannot append to ", path);
}

void writeIntent(const std::string& dir, int worldSize, int64_t step) {
  fs::create_directories(dir);
  for (const char* stale : {kDistCompleteFile, kDistMetadataFile, kDistJournalFile}) fs::remove(dir + "/" + stale);
  // An earlier save's rank files and piece lists: left in place, a rank that
  // dies before writing its own would look present (the ranks agree after
  // INTENT, so no rank of this save has written yet).
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string f = e.path().filename().string();
    if (f.rfind("rank", 0) == 0 && (f.ends_with(".safetensors") || f.ends_with(".pieces.json"))) fs::remove(e.path());
  }
  writeTextAtomically(dir, kDistIntentFile, json{{"world_size", worldSize}, {"step", step}}.dump() + "\n");
  appendJournal(dir, 0, kDistIntentFile);
}

void writeRankPieces(const std::string& dir, int rank, const std::vector<CheckpointPiece>& pieces) {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  WriteOptions wo;
  for (const auto& p : pieces) {
    MOE_ASSERT_EQ(static_cast<int64_t>(p.offsets.size()), p.data.dim(), "piece of ", p.tensor);
    const std::string key = pieceKey(p.tensor, p.offsets);
    if (wo.metadata.count(key)) fail("checkpoint ", dir, ": rank ", rank, " writes piece ", key, " twice");
    wo.metadata[key] = json{{"tensor", p.tensor}, {"offsets", p.offsets}, {"hash", contentHash(p.data)}}.dump();
    tensors.emplace_back(key, p.data.detach().to(at::kCPU).contiguous());
  }
  wo.metadata["__format__"] = kDistFormat;
  const std::string killAt = saveKillPoint(rank);
  fs::create_directories(dir);
  // What this rank is about to write, before the data: a save that never
  // completes names the pieces of every rank file that did not arrive.
  json list = json::array();
  for (const auto& p : pieces) list.push_back(pieceKey(p.tensor, p.offsets));
  writeTextAtomically(dir, piecesListName(rank), json{{"rank", rank}, {"pieces", list}}.dump() + "\n");
  if (killAt == "tmp") {
    writeSafetensors(dir + "/" + rankFileName(rank) + ".tmp.kill", tensors, wo);
    killSelf(rank, killAt);
  }
  writeSafetensors(dir + "/" + rankFileName(rank), tensors, wo);  // temporary name + rename inside
  appendJournal(dir, rank, rankFileName(rank));
  if (killAt == "renamed") killSelf(rank, "renamed");
}

json DistCheckpointMeta::toJson() const {
  json ts = json::object();
  for (const auto& [name, t] : tensors) {
    json pieces = json::array();
    for (const auto& p : t.pieces)
      pieces.push_back({{"file", p.file}, {"key", p.key}, {"rank", p.rank}, {"offsets", p.offsets},
                        {"lengths", p.lengths}, {"hash", p.hash}});
    ts[name] = {{"shape", t.shape}, {"dtype", t.dtype}, {"pieces", pieces}};
  }
  return {{"format", kDistFormat}, {"info", info}, {"tensors", ts}};
}

DistCheckpointMeta DistCheckpointMeta::fromJson(const json& j, const std::string& where) {
  auto need = [&](const json& o, const char* key, const std::string& ctx) -> const json& {
    if (!o.is_object() || !o.contains(key)) fail(where, ": ", ctx, " has no \"", key, "\"");
    return o.at(key);
  };
  if (!j.is_object()) fail(where, ": not a JSON object");
  const auto& format = need(j, "format", "metadata");
  if (format != kDistFormat) fail(where, ": format ", format.dump(), ", expected \"", kDistFormat, "\"");
  DistCheckpointMeta m;
  m.info = need(j, "info", "metadata");
  const auto& ts = need(j, "tensors", "metadata");
  if (!ts.is_object()) fail(where, ": \"tensors\" is not an object");
  try {
    for (const auto& [name, t] : ts.items()) {
      TensorInfo info;
      info.shape = need(t, "shape", "tensor '" + name + "'").get<std::vector<int64_t>>();
      info.dtype = need(t, "dtype", "tensor '" + name + "'").get<std::string>();
      if (!dtypeFromName(info.dtype)) fail(where, ": tensor '", name, "': unknown dtype ", info.dtype);
      for (const auto& p : need(t, "pieces", "tensor '" + name + "'")) {
        PieceInfo pi;
        const std::string ctx = "a piece of tensor '" + name + "'";
        pi.file = need(p, "file", ctx).get<std::string>();
        pi.key = need(p, "key", ctx).get<std::string>();
        pi.rank = need(p, "rank", ctx).get<int>();
        pi.offsets = need(p, "offsets", ctx).get<std::vector<int64_t>>();
        pi.lengths = need(p, "lengths", ctx).get<std::vector<int64_t>>();
        pi.hash = need(p, "hash", ctx).get<std::string>();
        if (pi.file.find('/') != std::string::npos || pi.file.find("..") != std::string::npos)
          fail(where, ": tensor '", name, "': piece file '", pi.file, "' is not a plain file name");
        if (pi.offsets.size() != info.shape.size() || pi.lengths.size() != info.shape.size())
          fail(where, ": tensor '", name, "': piece ", pi.key, " has ", pi.offsets.size(), " offsets and ",
               pi.lengths.size(), " lengths for ", info.shape.size(), " dims");
        info.pieces.push_back(std::move(pi));
      }
      m.tensors[name] = std::move(info);
    }
  } catch (const json::exception& e) {
    fail(where, ": malformed tensor entry: ", e.what());
  }
  return m;
}

std::string coverageProblem(const std::string& tensor, const TensorInfo& info) {
  const auto& shape = info.shape;
  int64_t numel = 1;
  for (auto d : shape) numel *= d;
  // Element counts per position: the small models this is for fit; the
  // count tensor is int8 so a 1e8-element tensor costs 100 MB at most.
  auto count = at::zeros({numel}, at::kChar).view(shape.empty() ? std::vector<int64_t>{} : shape);
  for (const auto& p : info.pieces) {
    at::Tensor v = count;
    for (size_t d = 0; d < shape.size(); ++d) {
      if (p.offsets[d] < 0 || p.lengths[d] < 0 || p.offsets[d] + p.lengths[d] > shape[d])
        return str("tensor '", tensor, "': piece ", p.key, " (", p.file, ") offsets ", shapeText(p.offsets),
                   " lengths ", shapeText(p.lengths), " is outside the shape ", shapeText(shape));
      v = v.narrow(static_cast<int64_t>(d), p.offsets[d], p.lengths[d]);
    }
    v.add_(1);
  }
  auto flat = count.reshape({-1});
  auto bad = (flat != 1).nonzero();
  if (bad.numel() == 0) return "";
  const int64_t first = bad[0][0].item<int64_t>();
  const int c = flat[first].item<int>();
  std::vector<int64_t> idx(shape.size());
  int64_t rest = first;
  for (size_t d = shape.size(); d-- > 0;) {
    idx[d] = rest % shape[d];
    rest /= shape[d];
  }
  std::string owners;
  for (const auto& p : info.pieces) {
    bool in = true;
    for (size_t d = 0; d < shape.size(); ++d) in &= idx[d] >= p.offsets[d] && idx[d] < p.offsets[d] + p.lengths[d];
    if (in) owners += (owners.empty() ? "" : ", ") + p.key + " (" + p.file + ")";
  }
  return str("tensor '", tensor, "' ", shapeText(shape), ": element ", shapeText(idx), c == 0 ? " is in no piece" : " is in ",
             c == 0 ? "" : std::to_string(c) + " pieces: " + owners, " (", bad.size(0), " of ", numel,
             " elements not covered exactly once)");
}

DistCheckpointMeta finalizeDistCheckpoint(const std::string& dir, int worldSize, const json& info,
                                          const std::map<std::string, std::vector<int64_t>>& shapes) {
  DistCheckpointMeta meta;
  meta.info = info;
  std::string missing;
  for (int r = 0; r < worldSize; ++r)
    if (!fs::exists(dir + "/" + rankFileName(r))) missing += (missing.empty() ? "" : ", ") + rankFileName(r);
  if (!missing.empty()) fail("checkpoint ", dir, ": rank files missing: ", missing, " (not marked complete)");
  for (int r = 0; r < worldSize; ++r) {
    const std::string file = rankFileName(r);
    SafetensorsReader reader(dir + "/" + file);
    for (const auto& key : reader.names()) {
      auto it = reader.metadata().find(key);
      if (it == reader.metadata().end()) fail(dir, "/", file, ": piece ", key, " has no metadata entry");
      const json pm = json::parse(it->second);
      PieceInfo p;
      p.file = file;
      p.key = key;
      p.rank = r;
      p.offsets = pm.at("offsets").get<std::vector<int64_t>>();
      p.lengths = reader.shape(key);
      p.hash = pm.at("hash").get<std::string>();
      const std::string tensor = pm.at("tensor").get<std::string>();
      auto s = shapes.find(tensor);
      if (s == shapes.end()) fail(dir, "/", file, ": piece ", key, " of tensor '", tensor, "' that the run does not save");
      auto& ti = meta.tensors[tensor];
      ti.shape = s->second;
      const std::string dt = dtypeName(reader.entry(key).dtype);
      if (!ti.dtype.empty() && ti.dtype != dt)
        fail(dir, "/", file, ": piece ", key, " is ", dt, " but other pieces of '", tensor, "' are ", ti.dtype);
      ti.dtype = dt;
      ti.pieces.push_back(std::move(p));
    }
  }
  for (const auto& [name, shape] : shapes) {
    auto& ti = meta.tensors[name];
    ti.shape = shape;
    if (ti.dtype.empty()) ti.dtype = "F32";
  }
  writeTextAtomically(dir, kDistMetadataFile, meta.toJson().dump(1) + "\n");
  appendJournal(dir, 0, kDistMetadataFile);
  writeCompleteMarker(dir);
  return meta;
}

void writeCompleteMarker(const std::string& dir) {
  writeTextAtomically(dir, kDistCompleteFile, std::string(kDistFormat) + "\n");
  appendJournal(dir, 0, kDistCompleteFile);
}

bool isDistCheckpoint(const std::string& dir) {
  return fs::is_directory(dir) && fs::exists(dir + "/" + kDistCompleteFile);
}

DistCheckpointSource::DistCheckpointSource(const std::string& dir, DistReadOptions options)
    : dir_(dir), options_(options) {
  if (!fs::is_directory(dir)) fail("checkpoint ", dir, ": not a directory");
  if (!fs::exists(dir + "/" + kDistCompleteFile)) {
    std::string detail;
    if (fs::exists(dir + "/" + std::string(kDistIntentFile))) {
      json intent;
      try {
        intent = json::parse(readText(dir + "/" + kDistIntentFile));
      } catch (const json::exception&) {
      }
      const int n = intent.value("world_size", 0);
      std::string missing;
      for (int r = 0; r < n; ++r)
        if (!fs::exists(dir + "/" + rankFileName(r)))
          missing += (missing.empty() ? "" : ", ") + rankFileName(r) + missingPiecesText(dir, r);
      detail = str("; the save of step ", intent.value("step", int64_t{-1}), " by ", n, " ranks is incomplete: ",
                   missing.empty() ? std::string("every rank file exists") : "missing " + missing,
                   fs::exists(dir + "/" + kDistMetadataFile) ? "" : ", missing metadata.json");
    }
    fail("checkpoint ", dir, ": no ", kDistCompleteFile, " marker: not a complete distributed checkpoint", detail);
  }
  const std::string metaPath = dir + "/" + kDistMetadataFile;
  if (!fs::exists(metaPath)) fail("checkpoint ", dir, ": ", kDistCompleteFile, " exists but ", kDistMetadataFile, " is missing");
  json j;
  try {
    j = json::parse(readText(metaPath));
  } catch (const json::exception& e) {
    fail(metaPath, ": not JSON: ", e.what());
  }
  meta_ = DistCheckpointMeta::fromJson(j, metaPath);
  for (const auto& [name, t] : meta_.tensors)
    for (const auto& p : t.pieces) {
      if (!readers_.count(p.file)) {
        const std::string path = dir + "/" + p.file;
        if (!fs::exists(path)) fail("checkpoint ", dir, ": rank file ", p.file, " (tensor '", name, "') is missing");
        readers_[p.file] = std::make_unique<SafetensorsReader>(path);  // truncation: an error naming the file
      }
      const auto& r = *readers_.at(p.file);
      if (!r.has(p.key)) fail(dir, "/", p.file, ": tensor '", name, "': piece ", p.key, " is missing from the file");
      if (r.shape(p.key) != p.lengths)
        fail(dir, "/", p.file, ": tensor '", name, "': piece ", p.key, " has shape ", shapeText(r.shape(p.key)),
             ", metadata says ", shapeText(p.lengths));
      if (dtypeName(r.entry(p.key).dtype) != t.dtype)
        fail(dir, "/", p.file, ": tensor '", name, "': piece ", p.key, " is ", dtypeName(r.entry(p.key).dtype),
             ", metadata says ", t.dtype);
    }
}

DistCheckpointSource::~DistCheckpointSource() = default;

const TensorInfo& DistCheckpointSource::info(const std::string& name) const {
  auto it = meta_.tensors.find(name);
  if (it == meta_.tensors.end()) failNoTensor(where(), name, names());
  return it->second;
}

const SafetensorsReader& DistCheckpointSource::reader(const std::string& file) const { return *readers_.at(file); }

std::string DistCheckpointSource::whereOf(const std::string& name) const {
  const auto& t = info(name);
  return t.pieces.size() == 1 ? dir_ + "/" + t.pieces[0].file : dir_;
}

std::vector<std::string> DistCheckpointSource::names() const {
  std::vector<std::string> out;
  for (const auto& kv : meta_.tensors) out.push_back(kv.first);
  return out;
}

bool DistCheckpointSource::has(const std::string& name) const { return meta_.tensors.count(name) > 0; }
std::vector<int64_t> DistCheckpointSource::shape(const std::string& name) const { return info(name).shape; }
at::ScalarType DistCheckpointSource::scalarType(const std::string& name) const {
  return toScalarType(*dtypeFromName(info(name).dtype));
}

at::Tensor DistCheckpointSource::readPiece(const std::string& name, const PieceInfo& piece,
                                           const std::vector<SliceRange>& local) const {
  const auto& r = reader(piece.file);
  if (!options_.verifyHashes) return r.readSlice(piece.key, local);
  const std::string id = piece.file + "/" + piece.key;
  bool verified = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    verified = verified_[id];
  }
  // Verified before: read only the overlap (a StridedShard target reads
  // several boxes of one piece; re-reading the whole piece each time was
  // waste, measured by bench_checkpoint).
  if (verified) return r.readSlice(piece.key, local);
  auto whole = r.read(piece.key);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!verified_[id]) {
      const auto h = contentHash(whole);
      if (h != piece.hash)
        fail(dir_, "/", piece.file, ": tensor '", name, "': piece ", piece.key, " is corrupt: content hash ", h,
             ", metadata says ", piece.hash);
      verified_[id] = true;
    }
  }
  at::Tensor v = whole;
  for (size_t d = 0; d < local.size(); ++d) v = v.narrow(static_cast<int64_t>(d), local[d].start, local[d].length);
  return v;
}

at::Tensor DistCheckpointSource::readSlice(const std::string& name, const std::vector<SliceRange>& ranges) const {
  const auto& t = info(name);
  const auto full = completeRanges(where(), name, t.shape, ranges);
  std::vector<int64_t> outShape;
  int64_t want = 1;
  for (const auto& r : full) {
    outShape.push_back(r.length);
    want *= r.length;
  }
  auto out = at::empty(outShape, at::TensorOptions(scalarType(name)));
  int64_t covered = 0;
  for (const auto& p : t.pieces) {
    std::vector<SliceRange> local(full.size());
    std::vector<int64_t> dst(full.size());
    bool overlaps = true;
    int64_t n = 1;
    for (size_t d = 0; d < full.size() && overlaps; ++d) {
      const int64_t lo = std::max(full[d].start, p.offsets[d]);
      const int64_t hi = std::min(full[d].start + full[d].length, p.offsets[d] + p.lengths[d]);
      if (hi <= lo) overlaps = false;
      local[d] = {lo - p.offsets[d], hi - lo};
      dst[d] = lo - full[d].start;
      n *= hi - lo;
    }
    if (!overlaps || n == 0) continue;
    auto part = readPiece(name, p, local);
    at::Tensor v = out;
    for (size_t d = 0; d < full.size(); ++d) v = v.narrow(static_cast<int64_t>(d), dst[d], local[d].length);
    v.copy_(part);
    covered += n;
  }
  if (covered != want)
    fail(dir_, ": tensor '", name, "': the pieces cover ", covered, " of the ", want,
         " requested elements (a gap or an overlap in metadata.json)");
  return out;
}

std::string DistCheckpointSource::verifyAllHashes() const {
  for (const auto& [name, t] : meta_.tensors)
    for (const auto& p : t.pieces) {
      const auto h = contentHash(reader(p.file).read(p.key));
      if (h != p.hash)
        return str(dir_, "/", p.file, ": tensor '", name, "': piece ", p.key, " content hash ", h,
                   " vs metadata ", p.hash);
    }
  return "";
}

PrefixView::PrefixView(const TensorSource& base, std::string prefix) : base_(base), prefix_(std::move(prefix)) {}

std::vector<std::string> PrefixView::names() const {
  std::vector<std::string> out;
  for (const auto& n : base_.names())
    if (n.compare(0, prefix_.size(), prefix_) == 0) out.push_back(n.substr(prefix_.size()));
  return out;
}
std::vector<int64_t> PrefixView::shape(const std::string& name) const { return base_.shape(prefix_ + name); }
at::ScalarType PrefixView::scalarType(const std::string& name) const { return base_.scalarType(prefix_ + name); }
at::Tensor PrefixView::readSlice(const std::string& name, const std::vector<SliceRange>& ranges) const {
  return base_.readSlice(prefix_ + name, ranges);
}

}  // namespace moe::io
