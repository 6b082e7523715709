#include "reference/io/sharded_safetensors.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "reference/io/safetensors_header.h"
#include "reference/io/strict_json.h"

namespace moe::io {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

// An index is two levels deep; the bound keeps a hostile file from costing
// more than a parse.
constexpr int kMaxIndexDepth = 16;
// Hugging Face numbers shards with five digits.
constexpr size_t kMaxShards = 99999;

std::string readIndexText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, ": cannot open: ", std::strerror(errno));
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  // The bound of a safetensors header bounds an index too: both list every
  // tensor once.
  if (size < 0 || static_cast<uint64_t>(size) > kMaxHeaderBytes)
    fail(path, ": index is ", size, " bytes, more than the ", kMaxHeaderBytes, " accepted");
  in.seekg(0);
  std::string text(static_cast<size_t>(size), '\0');
  if (!in.read(text.data(), size)) fail(path, ": cannot read ", size, " bytes");
  return text;
}

json parseIndexJson(const std::string& text, const std::string& where) {
  // A tensor listed twice in weight_map (perhaps with two different shards)
  // would otherwise be read from whichever entry came last.
  StrictJsonOptions o;
  o.maxDepth = kMaxIndexDepth;
  o.onTooDeep = [&] { fail(where, ": index JSON nests deeper than ", kMaxIndexDepth, " levels"); };
  o.onDuplicate = [&](const std::vector<std::string>& enclosing, const std::string& key) {
    if (enclosing.empty()) fail(where, ": duplicate key ", quoteName(key), " in the index");
    if (enclosing.size() == 1 && enclosing.front() == "weight_map")
      fail(where, ": weight_map: tensor ", quoteName(key), " is listed twice");
    fail(where, ": ", enclosing.front(), ": duplicate key ", quoteName(key));
  };
  try {
    return parseStrictJson(text.data(), text.data() + text.size(), o);
  } catch (const json::exception& e) {
    fail(where, ": index is not valid JSON: ", e.what());
  }
}

// Lexical only: the Hugging Face cache links each shard to a blob elsewhere,
// so resolving links would refuse legitimate checkpoints.
bool staysInside(const std::string& relative) {
  if (relative.empty() || relative.find('\0') != std::string::npos) return false;
  const fs::path p(relative);
  if (p.is_absolute() || p.has_root_name() || p.has_root_directory()) return false;
  for (const auto& part : p)
    if (part == "..") return false;
  return true;
}

std::optional<uint64_t> parseTotalSize(const json& v, const std::string& where) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer() && v.get<int64_t>() >= 0) return static_cast<uint64_t>(v.get<int64_t>());
  // Some writers produce 123.0; an integral float below 2^53 is exact.
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (d >= 0 && d <= 9007199254740992.0 && std::floor(d) == d) return static_cast<uint64_t>(d);
  }
  fail(where, ": metadata.total_size is ", previewJson(v), ", not a non-negative integer (bytes)");
}

std::string shardFileName(size_t i, size_t n) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "model-%05zu-of-%05zu.safetensors", i, n);
  return buf;
}

}  // namespace

std::vector<std::string> ShardIndex::shardFiles() const {
  std::set<std::string> files;
  for (const auto& kv : weightMap) files.insert(kv.second);
  return {files.begin(), files.end()};
}

ShardIndex parseShardIndex(const std::string& text, const std::string& where) {
  const json root = parseIndexJson(text, where);
  if (!root.is_object()) fail(where, ": the index is ", previewJson(root), ", not a JSON object");
  ShardIndex index;

  if (root.contains("metadata")) {
    const json& meta = root["metadata"];
    if (!meta.is_object())
      fail(where, ": \"metadata\" is ", previewJson(meta), ", not an object");
    if (meta.contains("total_size")) index.totalSize = parseTotalSize(meta["total_size"], where);
  }

  if (!root.contains("weight_map"))
    fail(where, ": no \"weight_map\" (the index must map every tensor to its shard file)");
  const json& map = root["weight_map"];
  if (!map.is_object())
    fail(where, ": \"weight_map\" is ", previewJson(map), ", not an object of tensor name -> shard file");
  if (map.empty()) fail(where, ": \"weight_map\" is empty (the index lists no tensor)");
  for (const auto& [tensor, file] : map.items()) {
    if (!file.is_string())
      fail(where, ": weight_map: tensor ", quoteName(tensor), " maps to ", previewJson(file),
           ", not a shard file name (a string)");
    const std::string name = file.get<std::string>();
    if (!staysInside(name))
      fail(where, ": weight_map: tensor ", quoteName(tensor), ": shard file ", quoteName(name),
           " is outside the checkpoint directory (shard files are relative paths inside it, without '..')");
    index.weightMap[tensor] = name;
  }
  return index;
}

// --- the source ---------------------------------------------------------------

ShardedSafetensorsSource::ShardedSafetensorsSource(const std::string& indexPath) : indexPath_(indexPath) {
  index_ = parseShardIndex(readIndexText(indexPath), indexPath);
  const fs::path dir = fs::path(indexPath).parent_path();

  // Which tensors each shard should hold, for the messages below.
  std::map<std::string, std::vector<std::string>> promised;  // shard file -> tensors (sorted)
  for (const auto& [tensor, file] : index_.weightMap) promised[file].push_back(tensor);

  std::map<std::string, const SafetensorsReader*> byFile;
  for (const std::string& file : index_.shardFiles()) {
    const fs::path p = dir / file;
    std::error_code ec;
    if (!fs::exists(p, ec)) {
      const auto& tensors = promised[file];
      fail(indexPath, ": shard file ", quoteName(file), " does not exist (", p.string(), "; the index maps ",
           tensors.size(), tensors.size() == 1 ? " tensor" : " tensors", " to it, e.g. ", quoteName(tensors.front()),
           ")");
    }
    shards_.push_back(std::make_unique<SafetensorsReader>(p.string()));
    byFile[file] = shards_.back().get();
  }

  // Every promise kept first, so a tensor found in a second shard below is
  // known to be in the shard the index names as well.
  for (const auto& [tensor, file] : index_.weightMap) {
    const SafetensorsReader* shard = byFile.at(file);
    if (!shard->has(tensor))
      fail(indexPath, ": tensor ", quoteName(tensor), ": the index maps it to shard ", quoteName(file),
           ", which does not hold it (", shard->names().size(), " tensors)");
    byName_[tensor] = shard;
  }
  uint64_t total = 0;
  for (const auto& [file, shard] : byFile) {
    for (const TensorEntry& e : shard->header().tensors) {
      total += e.nbytes();
      auto it = index_.weightMap.find(e.name);
      if (it == index_.weightMap.end())
        fail(indexPath, ": shard ", quoteName(file), " holds tensor ", quoteName(e.name),
             ", which the index does not list (every tensor of a shard must be in weight_map)");
      if (it->second != file)
        fail(indexPath, ": tensor ", quoteName(e.name), " is in two shard files, ", quoteName(it->second), " and ",
             quoteName(file), " (the index maps it to ", quoteName(it->second), "; a tensor must be stored once)");
    }
  }
  if (index_.totalSize && *index_.totalSize != total)
    fail(indexPath, ": metadata.total_size is ", *index_.totalSize, " but the shards' tensors hold ", total,
         " bytes");
}

const SafetensorsReader& ShardedSafetensorsSource::shardOf(const std::string& name) const {
  auto it = byName_.find(name);
  if (it == byName_.end()) failNoTensor(indexPath_, name, names());
  return *it->second;
}

std::string ShardedSafetensorsSource::whereOf(const std::string& name) const { return shardOf(name).where(); }

std::vector<std::string> ShardedSafetensorsSource::names() const {
  std::vector<std::string> out;
  for (const auto& kv : byName_) out.push_back(kv.first);
  return out;
}

bool ShardedSafetensorsSource::has(const std::string& name) const { return byName_.count(name) != 0; }

std::vector<int64_t> ShardedSafetensorsSource::shape(const std::string& name) const {
  return shardOf(name).shape(name);
}

at::ScalarType ShardedSafetensorsSource::scalarType(const std::string& name) const {
  return shardOf(name).scalarType(name);
}

at::Tensor ShardedSafetensorsSource::readSlice(const std::string& name,
                                               const std::vector<SliceRange>& ranges) const {
  return shardOf(name).readSlice(name, ranges);
}

uint64_t ShardedSafetensorsSource::bytesRead() const {
  uint64_t n = 0;
  for (const auto& s : shards_) n += s->bytesRead();
  return n;
}

// --- opening any checkpoint path ---------------------------------------------

std::unique_ptr<TensorSource> openCheckpoint(const std::string& path) {
  std::error_code ec;
  const fs::path p(path);
  if (fs::is_directory(p, ec)) {
    const fs::path single = p / kSingleFileName, index = p / kIndexFileName;
    const bool hasSingle = fs::exists(single, ec), hasIndex = fs::exists(index, ec);
    // Hugging Face writes one or the other; both means a save over an older
    // one, and either choice could load the wrong weights.
    if (hasSingle && hasIndex)
      fail("checkpoint ", path, ": holds both ", kSingleFileName, " and ", kIndexFileName,
           " (ambiguous: remove the one that is not the checkpoint, or name the file instead of the directory)");
    if (hasIndex) return std::make_unique<ShardedSafetensorsSource>(index.string());
    if (hasSingle) return std::make_unique<SafetensorsReader>(single.string());
    fail("checkpoint ", path, ": directory holds neither ", kSingleFileName, " nor ", kIndexFileName);
  }
  if (!fs::exists(p, ec)) fail("checkpoint ", path, ": no such file");
  const std::string suffix = ".json";
  if (path.size() >= suffix.size() && path.compare(path.size() - suffix.size(), suffix.size(), suffix) == 0)
    return std::make_unique<ShardedSafetensorsSource>(path);
  return std::make_unique<SafetensorsReader>(path);
}

// --- writing -------------------------------------------------------------------

std::vector<std::string> writeShardedSafetensors(const std::string& dir,
                                                 const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                                                 uint64_t maxShardBytes, const WriteOptions& options) {
  if (tensors.empty()) fail(dir, ": no tensors to write");
  if (maxShardBytes == 0) fail(dir, ": the shard size limit must be at least 1 byte, got 0");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail(dir, ": cannot create the directory: ", ec.message());
  if (fs::exists(fs::path(dir) / kSingleFileName, ec))
    fail(dir, ": already holds ", kSingleFileName, "; an index next to it would make the checkpoint ambiguous");

  // Names are checked before any file is written: a failed save leaves no
  // partial shard set behind.
  std::set<std::string> seen;
  for (const auto& kv : tensors)
    if (!seen.insert(kv.first).second) fail(dir, ": tensor ", quoteName(kv.first), " is given twice");

  // Greedy in order; each group is a range [begin, end) of `tensors`.
  std::vector<std::pair<size_t, size_t>> groups;
  uint64_t current = 0, total = 0;  // bytes in the open shard; in all shards
  bool open = false;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor& t = tensors[i].second;
    const uint64_t bytes = static_cast<uint64_t>(t.numel()) * t.element_size();
    total += bytes;
    if (bytes > maxShardBytes) {  // a shard of its own, as Hugging Face does
      groups.emplace_back(i, i + 1);
      open = false;
    } else if (!open || bytes > maxShardBytes - current) {  // current <= maxShardBytes: no overflow
      groups.emplace_back(i, i + 1);
      current = bytes;
      open = true;
    } else {
      groups.back().second = i + 1;
      current += bytes;
    }
  }
  if (groups.size() > kMaxShards)
    fail(dir, ": ", groups.size(), " shards of at most ", maxShardBytes, " bytes; at most ", kMaxShards,
         " fit Hugging Face's five-digit shard names");

  std::vector<std::string> files;
  json weightMap = json::object();
  for (size_t g = 0; g < groups.size(); ++g) {
    const std::string file = shardFileName(g + 1, groups.size());
    const std::vector<std::pair<std::string, at::Tensor>> part(tensors.begin() + groups[g].first,
                                                               tensors.begin() + groups[g].second);
    writeSafetensors((fs::path(dir) / file).string(), part, options);
    for (const auto& kv : part) weightMap[kv.first] = file;
    files.push_back(file);
  }
  const json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weightMap}};
  const fs::path indexPath = fs::path(dir) / kIndexFileName;
  const fs::path tmp = indexPath.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) fail(tmp.string(), ": cannot write: ", std::strerror(errno));
    out << index.dump(2) << "\n";
    out.close();
    if (!out) fail(tmp.string(), ": write failed");
  }
  fs::rename(tmp, indexPath, ec);
  if (ec) fail(indexPath.string(), ": cannot rename ", tmp.string(), " into place: ", ec.message());
  return files;
}

}  // namespace moe::io
