// colwise: a Linear weight [out, in] split on its output dim over tp
// (Shard(0)); the module's input is replicated and its input gradient is
// all-reduced over tp. q/k/v projections must split whole heads.
#include "common/error.h"
#include "reference/plan/style.h"

namespace moe::plan {
namespace {

bool isAttentionQkv(const std::string& name) {
  for (const char* s : {"q_proj.weight", "k_proj.weight", "v_proj.weight"})
    if (name.size() >= std::string(s).size() &&
        name.compare(name.size() - std::string(s).size(), std::string::npos, s) == 0)
      return true;
  return false;
}

class ColwiseStyle : public PlanStyle {
 public:
  std::string name() const override { return "colwise"; }
  std::string meshDim() const override { return "tp"; }
  ref::Placement placeParameter(const ParamTarget& p, const StyleContext& ctx) const override {
    requireRank(*this, p, 2);
    if (isAttentionQkv(p.name))
      requireDivisible(*this, p, p.globalShape[0] / ctx.config.headDim, ctx.meshDimSize, "heads");
    else
      requireDivisible(*this, p, p.globalShape[0], ctx.meshDimSize, "output features");
    return ref::Placement::shard(0);
  }
  uint32_t moduleComm(const std::string&) const override { return kCopyInputTp; }
};

}  // namespace

MOE_REGISTER(PlanStyle, ColwiseStyle);

}  // namespace moe::plan
