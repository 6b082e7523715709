#include "harness/mesh/device_mesh.h"

#include <algorithm>
#include <nlohmann/json.hpp>

namespace moe::mesh {

const std::vector<std::string>& DeviceMesh::knownDims() {
  static const std::vector<std::string> k = {"dp", "ep", "tp", "edp", "sp", "cp", "pp"};
  return k;
}

std::vector<MeshDim> DeviceMesh::parse(const std::string& text) {
  nlohmann::ordered_json j;
  try {
    j = nlohmann::ordered_json::parse(text);
  } catch (const std::exception& e) {
    fail("mesh '", text, "' is not valid JSON: ", e.what());
  }
  if (!j.is_object()) fail("mesh '", text, "' must be a JSON object of dim name to size, e.g. {\"dp\":2,\"ep\":2}");
  std::vector<MeshDim> dims;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!it.value().is_number_integer())
      fail("mesh '", text, "': size of dim '", it.key(), "' must be an integer, got ", it.value().dump());
    dims.push_back({it.key(), it.value().get<int>()});
  }
  return dims;
}

std::string DeviceMesh::describe(const std::vector<MeshDim>& dims) {
  std::string s = "{";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? "," : "") + moe::str("\"", dims[i].name, "\":", dims[i].size);
  return s + "}";
}

void DeviceMesh::validate(const std::vector<MeshDim>& dims, int worldSize) {
  const auto& known = knownDims();
  long long product = 1;
  for (size_t i = 0; i < dims.size(); ++i) {
    const auto& d = dims[i];
    if (std::find(known.begin(), known.end(), d.name) == known.end()) {
      std::string list;
      for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
      fail("mesh ", describe(dims), ": unknown dim name '", d.name, "' (known: ", list, ")");
    }
    for (size_t k = 0; k < i; ++k)
      if (dims[k].name == d.name) fail("mesh ", describe(dims), ": dim '", d.name, "' appears twice");
    if (d.size < 1) fail("mesh ", describe(dims), ": dim '", d.name, "' has size ", d.size, "; sizes must be >= 1");
    product *= d.size;
  }
  if (product != worldSize)
    fail("mesh ", describe(dims), ": the product of the dim sizes is ", product, " but the world has ", worldSize,
         " rank(s)");
}

MeshShape::MeshShape(std::vector<MeshDim> dims, int worldSize) : dims_(std::move(dims)), worldSize_(worldSize) {
  DeviceMesh::validate(dims_, worldSize);
  strides_.assign(dims_.size(), 1);
  for (int i = static_cast<int>(dims_.size()) - 2; i >= 0; --i) strides_[i] = strides_[i + 1] * dims_[i + 1].size;
}

std::string MeshShape::describe() const { return DeviceMesh::describe(dims_); }

int MeshShape::index(const std::string& dim) const {
  for (size_t i = 0; i < dims_.size(); ++i)
    if (dims_[i].name == dim) return static_cast<int>(i);
  return -1;
}

int MeshShape::size(const std::string& dim) const {
  int i = index(dim);
  return i < 0 ? 1 : dims_[i].size;
}

int MeshShape::coord(int rank, const std::string& dim) const {
  int i = index(dim);
  return i < 0 ? 0 : coordsOf(rank)[i];
}

std::vector<int> MeshShape::coordsOf(int rank) const {
  MOE_ASSERT(rank >= 0 && rank < worldSize_, "rank ", rank, " world ", worldSize_);
  std::vector<int> c(dims_.size());
  for (size_t i = 0; i < dims_.size(); ++i) c[i] = (rank / strides_[i]) % dims_[i].size;
  return c;
}

int MeshShape::rankOf(const std::vector<int>& coords) const {
  MOE_ASSERT_EQ(coords.size(), dims_.size());
  int r = 0;
  for (size_t i = 0; i < dims_.size(); ++i) {
    MOE_ASSERT(coords[i] >= 0 && coords[i] < dims_[i].size, "coord ", coords[i], " of dim ", dims_[i].name);
    r += coords[i] * strides_[i];
  }
  return r;
}

std::vector<int> MeshShape::groupRanks(int rank, const std::vector<std::string>& dims) const {
  std::vector<bool> varies(dims_.size(), false);
  for (const auto& d : dims) {
    int i = index(d);
    if (i >= 0) varies[i] = true;
  }
  const auto mine = coordsOf(rank);
  std::vector<int> out;
  for (int r = 0; r < worldSize_; ++r) {
    const auto c = coordsOf(r);
    bool same = true;
    for (size_t i = 0; i < dims_.size() && same; ++i) same = varies[i] || c[i] == mine[i];
    if (same) out.push_back(r);
  }
  return out;
}

std::vector<std::vector<int>> MeshShape::partition(const std::vector<std::string>& dims) const {
  std::vector<std::vector<int>> groups;
  std::vector<bool> placed(worldSize_, false);
  for (int r = 0; r < worldSize_; ++r) {
    if (placed[r]) continue;
    auto g = groupRanks(r, dims);
    for (int m : g) placed[m] = true;
    groups.push_back(std::move(g));
  }
  return groups;
}

std::string MeshShape::groupName(const std::vector<std::string>& dims) const {
  std::string name;
  for (const auto& d : dims)
    if (has(d)) name += (name.empty() ? "" : "+") + d;
  return name.empty() ? "self" : name;
}

DeviceMesh::DeviceMesh(std::shared_ptr<comm::Communicator> world, std::vector<MeshDim> dims)
    : world_(std::move(world)), shape_(std::move(dims), world_->size()) {
  for (const auto& d : shape_.dims()) comm(d.name);
}

std::shared_ptr<comm::Communicator> DeviceMesh::comm(const std::string& dim) {
  return comm(std::vector<std::string>{dim});
}

std::shared_ptr<comm::Communicator> DeviceMesh::comm(const std::vector<std::string>& dims) {
  for (const auto& d : dims)
    if (std::find(knownDims().begin(), knownDims().end(), d) == knownDims().end())
      fail("mesh ", shape_.describe(), ": unknown dim name '", d, "'");
  // Every rank computes the same partition, as split() requires.
  return world_->split(shape_.groupName(dims), shape_.partition(dims));
}

}  // namespace moe::mesh
