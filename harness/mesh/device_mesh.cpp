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

DeviceMesh::DeviceMesh(std::shared_ptr<comm::Communicator> world, std::vector<MeshDim> dims)
    : world_(std::move(world)), dims_(std::move(dims)) {
  validate(dims_, world_->size());
  strides_.assign(dims_.size(), 1);
  for (int i = static_cast<int>(dims_.size()) - 2; i >= 0; --i) strides_[i] = strides_[i + 1] * dims_[i + 1].size;
  for (const auto& d : dims_) comm(d.name);
}

int DeviceMesh::index(const std::string& dim) const {
  for (size_t i = 0; i < dims_.size(); ++i)
    if (dims_[i].name == dim) return static_cast<int>(i);
  return -1;
}

int DeviceMesh::size(const std::string& dim) const {
  int i = index(dim);
  return i < 0 ? 1 : dims_[i].size;
}

int DeviceMesh::coord(const std::string& dim) const {
  int i = index(dim);
  return i < 0 ? 0 : coords()[i];
}

std::vector<int> DeviceMesh::coordsOf(int rank) const {
  MOE_ASSERT(rank >= 0 && rank < world_->size(), "rank ", rank, " world ", world_->size());
  std::vector<int> c(dims_.size());
  for (size_t i = 0; i < dims_.size(); ++i) c[i] = (rank / strides_[i]) % dims_[i].size;
  return c;
}

int DeviceMesh::rankOf(const std::vector<int>& coords) const {
  MOE_ASSERT_EQ(coords.size(), dims_.size());
  int r = 0;
  for (size_t i = 0; i < dims_.size(); ++i) r += coords[i] * strides_[i];
  return r;
}

std::vector<int> DeviceMesh::groupRanks(int rank, const std::vector<std::string>& dims) const {
  std::vector<int> idx;
  for (const auto& d : dims) {
    int i = index(d);
    if (i >= 0) idx.push_back(i);
  }
  std::vector<int> out;
  for (int r = 0; r < world_->size(); ++r) {
    auto a = coordsOf(r), b = coordsOf(rank);
    bool same = true;
    for (size_t i = 0; i < dims_.size() && same; ++i)
      if (std::find(idx.begin(), idx.end(), static_cast<int>(i)) == idx.end()) same = a[i] == b[i];
    if (same) out.push_back(r);
  }
  return out;
}

std::shared_ptr<comm::Communicator> DeviceMesh::comm(const std::string& dim) {
  return comm(std::vector<std::string>{dim});
}

std::shared_ptr<comm::Communicator> DeviceMesh::comm(const std::vector<std::string>& dimsIn) {
  std::vector<std::string> dims;
  for (const auto& d : dimsIn) {
    if (std::find(knownDims().begin(), knownDims().end(), d) == knownDims().end())
      fail("mesh ", describe(dims_), ": unknown dim name '", d, "'");
    if (has(d)) dims.push_back(d);
  }
  std::string name;
  for (const auto& d : dims) name += (name.empty() ? "" : "+") + d;
  if (dims.empty()) name = "self";
  // The partition of the world into groups along `dims`: every rank computes
  // the same list, as split() requires.
  std::vector<std::vector<int>> groups;
  std::vector<bool> placed(world_->size(), false);
  for (int r = 0; r < world_->size(); ++r) {
    if (placed[r]) continue;
    auto g = groupRanks(r, dims);
    for (int m : g) placed[m] = true;
    groups.push_back(g);
  }
  return world_->split(name, groups);
}

}  // namespace moe::mesh
