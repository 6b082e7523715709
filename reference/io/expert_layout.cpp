#include "reference/io/expert_layout.h"

#include <algorithm>
#include <array>
#include <set>

#include "common/error.h"
#include "reference/io/safetensors_header.h"

namespace moe::io {
namespace {

constexpr const char* kExperts = "experts";
constexpr const char* kWeight = "weight";
// Indices into HubExpertNames::projs.
constexpr int kGate = 0, kUp = 1, kDown = 2;
constexpr const char* kMemBlock = "mlp";
// Expert indices have at most this many digits: bounds the integer parse.
constexpr size_t kMaxIndexDigits = 9;

enum class NameKind { kOther, kHub, kFusedGateUp, kFusedDown };

struct ParsedName {
  NameKind kind = NameKind::kOther;
  std::string prefix;  // the experts module, e.g. "model.layers.0.mlp.experts"
  int64_t expert = -1;
  int proj = -1;  // index into HubExpertNames::projs
};

std::vector<std::string> splitDots(const std::string& s) {
  std::vector<std::string> out(1);
  for (char c : s) {
    if (c == '.')
      out.emplace_back();
    else
      out.back() += c;
  }
  return out;
}

bool allDigits(const std::string& s) {
  return !s.empty() &&
         std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::string joinDots(const std::vector<std::string>& seg) {
  std::string s;
  for (size_t i = 0; i < seg.size(); ++i) s += (i ? "." : "") + seg[i];
  return s;
}

// `name` with the block segment of "model.layers.<N>.<from>...." renamed to
// `to`; other names unchanged.
std::string renameBlock(const std::string& name, const std::string& from, const std::string& to) {
  if (from == to) return name;
  std::vector<std::string> seg = splitDots(name);
  if (seg.size() < 5 || seg[0] != "model" || seg[1] != "layers" || !allDigits(seg[2]) ||
      seg[3] != from)
    return name;
  seg[3] = to;
  return joinDots(seg);
}

std::string projList(const HubExpertNames& hub) {
  return "{" + hub.projs[0] + "," + hub.projs[1] + "," + hub.projs[2] + "}";
}

// Classifies `name` (an in-memory name: the hub block already renamed). A
// name with an "experts.<digits>." part that is not exactly
// "<prefix>.<e>.<gate|up|down proj>.weight" with the family's projection
// names is an error: silently passing it through would load a checkpoint
// with weights we ignore.
ParsedName parseExpertName(const std::string& where, const std::string& name,
                           const HubExpertNames& hub) {
  const auto& kHubProjs = hub.projs;
  const std::vector<std::string> seg = splitDots(name);
  ParsedName p;
  for (size_t i = 0; i + 1 < seg.size(); ++i) {
    if (seg[i] != kExperts) continue;
    std::string prefix;
    for (size_t j = 0; j <= i; ++j) prefix += (j ? "." : "") + seg[j];
    if (i + 2 == seg.size() && (seg[i + 1] == kGateUpProj || seg[i + 1] == kDownProj)) {
      p.kind = seg[i + 1] == kGateUpProj ? NameKind::kFusedGateUp : NameKind::kFusedDown;
      p.prefix = prefix;
      return p;
    }
    if (!allDigits(seg[i + 1])) continue;
    const std::string& idx = seg[i + 1];
    const auto proj = i + 2 < seg.size()
                          ? std::find(kHubProjs.begin(), kHubProjs.end(), seg[i + 2])
                          : kHubProjs.end();
    if (idx.size() > kMaxIndexDigits || (idx.size() > 1 && idx[0] == '0') ||
        proj == kHubProjs.end() || i + 4 != seg.size() || seg[i + 3] != kWeight)
      fail(where, ": unexpected per-expert tensor '", name, "' (expected ",
           prefix, ".<expert>.", projList(hub), ".weight)");
    p.kind = NameKind::kHub;
    p.prefix = prefix;
    p.expert = std::stoll(idx);
    p.proj = static_cast<int>(proj - kHubProjs.begin());
    return p;
  }
  return p;
}

// What the names of a source say about its expert tensors.
struct ExpertScan {
  std::vector<std::string> others;       // non-hub names, incl. fused ones (in memory)
  std::map<std::string, std::string> baseName;  // renamed in-memory name -> source name
  std::set<std::string> fusedPrefixes;
  // prefix -> expert -> which projections are present
  std::map<std::string, std::map<int64_t, std::array<bool, 3>>> hub;
  ExpertLayout layout = ExpertLayout::kNone;
};

ExpertScan scanExpertNames(const TensorSource& source, const HubExpertNames& hub) {
  ExpertScan scan;
  std::string aFused, aHub;  // one name of each layout, for the message
  std::set<std::string> seen;
  for (const std::string& stored : source.names()) {
    const std::string name = renameBlock(stored, hub.hubBlock, kMemBlock);
    if (!seen.insert(name).second)
      fail(source.where(), ": checkpoint names '", name, "' twice (once as '", stored,
           "': the hub block ", hub.hubBlock, " and the in-memory block ", kMemBlock,
           " are mixed)");
    if (name != stored) scan.baseName[name] = stored;
    const ParsedName p = parseExpertName(source.where(), name, hub);
    if (p.kind == NameKind::kHub) {
      scan.hub[p.prefix][p.expert][p.proj] = true;
      if (aHub.empty()) aHub = name;
      continue;
    }
    if (p.kind != NameKind::kOther) {
      scan.fusedPrefixes.insert(p.prefix);
      if (aFused.empty()) aFused = name;
    }
    scan.others.push_back(name);
  }
  if (!aFused.empty() && !aHub.empty())
    fail(source.where(), ": checkpoint mixes expert layouts: '", aFused,
         "' is fused but '", aHub, "' is per-expert (hub layout)");
  scan.layout = !aHub.empty()     ? ExpertLayout::kHub
                : !aFused.empty() ? ExpertLayout::kFused
                                  : ExpertLayout::kNone;
  return scan;
}

void checkNumExperts(const std::string& where, const std::string& prefix,
                     int64_t found, int64_t expected) {
  if (expected < 0 || found == expected) return;
  if (found > expected)
    fail(where, ": ", prefix, ": has ", found, " experts but ", expected,
         " are expected (extra experts ", expected, "..", found - 1, ")");
  fail(where, ": ", prefix, ": has ", found, " experts but ", expected,
       " are expected (experts ", found, "..", expected - 1, " are missing)");
}

// Checks that gate_up [E, 2·I, H] and down [E, H, I] agree (transposed,
// HubExpertNames::transposedFused: [E, H, 2·I] and [E, I, H]).
void checkFusedPair(const std::string& where, const std::string& prefix,
                    const std::vector<int64_t>& gateUp,
                    const std::vector<int64_t>& down, at::ScalarType gateUpType,
                    at::ScalarType downType, int64_t numExperts, bool transposed = false) {
  const std::string gu = fusedGateUpName(prefix), dn = fusedDownName(prefix);
  if (transposed) {
    if (gateUp.size() != 3 || gateUp[2] % 2 != 0)
      fail(where, ": tensor '", gu, "' has shape ", formatShape(gateUp),
           " but [E, H, 2*I] (an even last dim, gate/up interleaved) is expected");
    const std::vector<int64_t> want = {gateUp[0], gateUp[2] / 2, gateUp[1]};
    if (down != want)
      fail(where, ": tensor '", dn, "' has shape ", formatShape(down), " but '",
           gu, "' ", formatShape(gateUp), " implies [E, I, H] = ", formatShape(want));
    if (gateUpType != downType)
      fail(where, ": tensor '", dn, "' is ", c10::toString(downType), " but '",
           gu, "' is ", c10::toString(gateUpType));
    checkNumExperts(where, prefix, gateUp[0], numExperts);
    return;
  }
  if (gateUp.size() != 3 || gateUp[1] % 2 != 0)
    fail(where, ": tensor '", gu, "' has shape ", formatShape(gateUp),
         " but [E, 2*I, H] (an even middle dim) is expected");
  const std::vector<int64_t> want = {gateUp[0], gateUp[2], gateUp[1] / 2};
  if (down != want)
    fail(where, ": tensor '", dn, "' has shape ", formatShape(down), " but '",
         gu, "' ", formatShape(gateUp), " implies [E, H, I] = ",
         formatShape(want));
  if (gateUpType != downType)
    fail(where, ": tensor '", dn, "' is ", c10::toString(downType), " but '",
         gu, "' is ", c10::toString(gateUpType));
  checkNumExperts(where, prefix, gateUp[0], numExperts);
}

}  // namespace

std::string expertsPrefix(int64_t layer) {
  return str("model.layers.", layer, ".mlp.experts");
}
std::string fusedGateUpName(const std::string& prefix) {
  return prefix + "." + kGateUpProj;
}
std::string fusedDownName(const std::string& prefix) {
  return prefix + "." + kDownProj;
}
std::string hubExpertName(const std::string& prefix, int64_t expert,
                          const std::string& proj) {
  return str(prefix, ".", expert, ".", proj, ".", kWeight);
}

const char* layoutName(ExpertLayout layout) {
  switch (layout) {
    case ExpertLayout::kNone: return "none";
    case ExpertLayout::kFused: return "fused";
    case ExpertLayout::kHub: return "hub";
  }
  return "?";
}

ExpertLayout detectExpertLayout(const TensorSource& source, const HubExpertNames& hub) {
  return scanExpertNames(source, hub).layout;
}

FusedExpertView::FusedExpertView(const TensorSource& base,
                                 const FusedViewOptions& options)
    : base_(base), hub_(options.hub) {
  const std::string where = base.where();
  const auto& kHubProjs = hub_.projs;
  ExpertScan scan = scanExpertNames(base, hub_);
  layout_ = scan.layout;
  names_ = std::move(scan.others);
  baseName_ = std::move(scan.baseName);

  for (const std::string& prefix : scan.fusedPrefixes) {
    const std::string gu = fusedGateUpName(prefix), dn = fusedDownName(prefix);
    for (const auto& [have, missing] : {std::pair{gu, dn}, std::pair{dn, gu}})
      if (!base.has(baseName(missing)))
        fail(where, ": tensor '", have, "' has no partner '", missing, "'");
    checkFusedPair(where, prefix, base.shape(baseName(gu)), base.shape(baseName(dn)),
                   base.scalarType(baseName(gu)), base.scalarType(baseName(dn)),
                   options.numExperts, hub_.transposedFused);
  }
  if (hub_.transposedFused && !scan.hub.empty())
    fail(where, ": ", scan.hub.begin()->first, " is stored per expert, but this family's hub "
         "layout is the fused one (gate_up_proj [E, H, 2*I] and down_proj [E, I, H], with biases)");

  for (const auto& [prefix, experts] : scan.hub) {
    HubModule m;
    m.prefix = prefix;
    m.basePrefix = renameBlock(prefix, kMemBlock, hub_.hubBlock);
    m.numExperts = experts.rbegin()->first + 1;
    if (static_cast<int64_t>(experts.size()) != m.numExperts) {
      int64_t missing = 0;
      while (experts.count(missing)) ++missing;
      fail(where, ": ", prefix, ": expert ", missing, " is missing (found ",
           experts.size(), " experts, the highest is ", m.numExperts - 1, ")");
    }
    checkNumExperts(where, prefix, m.numExperts, options.numExperts);
    for (const auto& [e, present] : experts)
      for (int p = 0; p < 3; ++p)
        if (!present[p])
          fail(where, ": tensor '", hubExpertName(m.basePrefix, e, kHubProjs[p]),
               "' is missing (expert ", e, " has other projections)");

    const std::string ref = hubExpertName(m.basePrefix, 0, kHubProjs[kGate]);
    const std::vector<int64_t> gate = base.shape(ref);
    if (gate.size() != 2)
      fail(where, ": tensor '", ref, "' has shape ", formatShape(gate),
           " but [I, H] is expected");
    m.intermediate = gate[0];
    m.hidden = gate[1];
    m.type = base.scalarType(ref);
    const std::array<std::vector<int64_t>, 3> want = {
        gate, gate, std::vector<int64_t>{m.hidden, m.intermediate}};
    for (int64_t e = 0; e < m.numExperts; ++e)
      for (int p = 0; p < 3; ++p) {
        const std::string name = hubExpertName(m.basePrefix, e, kHubProjs[p]);
        const std::vector<int64_t> s = base.shape(name);
        if (s != want[p])
          fail(where, ": tensor '", name, "' has shape ", formatShape(s),
               " but ", formatShape(want[p]), " is expected (from '", ref,
               "' [I, H] = ", formatShape(gate), ")");
        if (base.scalarType(name) != m.type)
          fail(where, ": tensor '", name, "' is ",
               c10::toString(base.scalarType(name)), " but '", ref, "' is ",
               c10::toString(m.type));
      }
    for (const std::string& fused : {fusedGateUpName(prefix), fusedDownName(prefix)}) {
      names_.push_back(fused);
      hubByFusedName_[fused] = m;
    }
  }
  std::sort(names_.begin(), names_.end());
}

bool FusedExpertView::has(const std::string& name) const {
  return std::binary_search(names_.begin(), names_.end(), name);
}

std::vector<int64_t> FusedExpertView::shape(const std::string& name) const {
  auto it = hubByFusedName_.find(name);
  if (it == hubByFusedName_.end()) return base_.shape(baseName(name));
  const HubModule& m = it->second;
  if (name == fusedGateUpName(m.prefix))
    return {m.numExperts, 2 * m.intermediate, m.hidden};
  return {m.numExperts, m.hidden, m.intermediate};
}

std::string FusedExpertView::whereOf(const std::string& name) const {
  auto it = hubByFusedName_.find(name);
  if (it == hubByFusedName_.end()) return base_.whereOf(baseName(name));
  // The file of every per-expert tensor when they share one, so a sharded
  // checkpoint's NaN is still traced to its shard. The family's hub names
  // (hub_), under the block's name in the file (basePrefix).
  const HubModule& m = it->second;
  const bool gateUp = name == fusedGateUpName(m.prefix);
  std::string file;
  for (int64_t e = 0; e < m.numExperts; ++e)
    for (const std::string& proj : gateUp ? std::vector<std::string>{hub_.projs[kGate], hub_.projs[kUp]}
                                          : std::vector<std::string>{hub_.projs[kDown]}) {
      const std::string w = base_.whereOf(hubExpertName(m.basePrefix, e, proj));
      if (file.empty()) file = w;
      if (w != file) return where();
    }
  return file.empty() ? where() : file;
}

at::ScalarType FusedExpertView::scalarType(const std::string& name) const {
  auto it = hubByFusedName_.find(name);
  return it == hubByFusedName_.end() ? base_.scalarType(baseName(name)) : it->second.type;
}

const std::string& FusedExpertView::baseName(const std::string& name) const {
  auto it = baseName_.find(name);
  return it == baseName_.end() ? name : it->second;
}

at::Tensor FusedExpertView::readSlice(
    const std::string& name, const std::vector<SliceRange>& ranges) const {
  auto it = hubByFusedName_.find(name);
  if (it == hubByFusedName_.end()) return base_.readSlice(baseName(name), ranges);
  const HubModule& m = it->second;
  return readHubSlice(m, name == fusedGateUpName(m.prefix), ranges);
}

at::Tensor FusedExpertView::readHubSlice(
    const HubModule& m, bool gateUp,
    const std::vector<SliceRange>& ranges) const {
  const std::string name = gateUp ? fusedGateUpName(m.prefix) : fusedDownName(m.prefix);
  const std::vector<SliceRange> r = completeRanges(where(), name, shape(name), ranges);
  std::vector<at::Tensor> perExpert;
  for (int64_t e = r[0].start; e < r[0].start + r[0].length; ++e) {
    if (!gateUp) {
      perExpert.push_back(
          base_.readSlice(hubExpertName(m.basePrefix, e, hub_.projs[kDown]), {r[1], r[2]}));
      continue;
    }
    // Fused rows [begin, end) of [0, 2·I): gate rows are [0, I), up rows
    // [I, 2·I), so a row range touches one or both hub tensors.
    const int64_t begin = r[1].start, end = r[1].start + r[1].length;
    const int64_t inter = m.intermediate;
    std::vector<at::Tensor> parts;
    if (begin < inter)
      parts.push_back(base_.readSlice(hubExpertName(m.basePrefix, e, hub_.projs[kGate]),
                                      {{begin, std::min(end, inter) - begin}, r[2]}));
    if (end > inter) {
      const int64_t upBegin = std::max(begin, inter) - inter;
      parts.push_back(base_.readSlice(hubExpertName(m.basePrefix, e, hub_.projs[kUp]),
                                      {{upBegin, end - inter - upBegin}, r[2]}));
    }
    perExpert.push_back(parts.size() == 1 ? parts[0] : at::cat(parts, 0));
  }
  std::vector<int64_t> outShape;
  for (const SliceRange& x : r) outShape.push_back(x.length);
  // at::stack needs at least one tensor, and a row range of length 0 reads
  // no part at all.
  if (perExpert.empty() || r[1].length == 0)
    return at::empty(outShape, at::TensorOptions().dtype(m.type));
  return at::stack(perExpert, 0);
}

std::map<std::string, at::Tensor> readAllFused(const TensorSource& source,
                                               const FusedViewOptions& options) {
  return readAll(FusedExpertView(source, options));
}

std::vector<std::pair<std::string, at::Tensor>> toHubLayout(
    const std::vector<std::pair<std::string, at::Tensor>>& tensors,
    const std::string& where, const HubExpertNames& hub) {
  std::map<std::string, at::Tensor> byName(tensors.begin(), tensors.end());
  std::vector<std::pair<std::string, at::Tensor>> out;
  const auto toHub = [&](const std::string& n) { return renameBlock(n, kMemBlock, hub.hubBlock); };
  for (const auto& [name, t] : tensors) {
    const ParsedName p = parseExpertName(where, name, hub);
    if (p.kind == NameKind::kOther || p.kind == NameKind::kHub) {
      out.emplace_back(toHub(name), t);
      continue;
    }
    const std::string gu = fusedGateUpName(p.prefix), dn = fusedDownName(p.prefix);
    const std::string& partner = p.kind == NameKind::kFusedGateUp ? dn : gu;
    if (!byName.count(partner))
      fail(where, ": tensor '", name, "' has no partner '", partner, "'");
    if (p.kind == NameKind::kFusedDown) continue;  // emitted with gate_up
    const at::Tensor& gateUp = t;   // [E, 2·I, H]
    const at::Tensor& down = byName.at(dn);  // [E, H, I]
    checkFusedPair(where, p.prefix, gateUp.sizes().vec(), down.sizes().vec(),
                   gateUp.scalar_type(), down.scalar_type(), /*numExperts=*/-1,
                   hub.transposedFused);
    if (hub.transposedFused) {  // the hub keeps the fused pair
      out.emplace_back(toHub(name), gateUp);
      out.emplace_back(toHub(dn), down);
      continue;
    }
    const int64_t inter = gateUp.size(1) / 2;
    const std::string hubPrefix = toHub(p.prefix);
    for (int64_t e = 0; e < gateUp.size(0); ++e) {
      out.emplace_back(hubExpertName(hubPrefix, e, hub.projs[kGate]),
                       gateUp[e].narrow(0, 0, inter).contiguous());
      out.emplace_back(hubExpertName(hubPrefix, e, hub.projs[kUp]),
                       gateUp[e].narrow(0, inter, inter).contiguous());
      out.emplace_back(hubExpertName(hubPrefix, e, hub.projs[kDown]),
                       down[e].contiguous());
    }
  }
  return out;
}

}  // namespace moe::io
