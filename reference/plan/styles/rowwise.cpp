// rowwise: a Linear weight [out, in] split on its input dim over tp
// (Shard(1)); the module's output is Partial(sum) and is all-reduced over tp
// (identity backward). o_proj must split whole heads.
#include "common/error.h"
#include "reference/plan/style.h"

namespace moe::plan {
namespace {

class RowwiseStyle : public PlanStyle {
 public:
  std::string name() const override { return "rowwise"; }
  std::string meshDim() const override { return "tp"; }
  ref::Placement placeParameter(const ParamTarget& p, const StyleContext& ctx) const override {
    requireRank(*this, p, 2);
    const std::string o = "o_proj.weight";
    if (p.name.size() >= o.size() && p.name.compare(p.name.size() - o.size(), o.size(), o) == 0)
      requireDivisible(*this, p, p.globalShape[1] / ctx.config.headDim, ctx.meshDimSize, "heads");
    else
      requireDivisible(*this, p, p.globalShape[1], ctx.meshDimSize, "input features");
    return ref::Placement::shard(1);
  }
  uint32_t moduleComm(const std::string&) const override { return kAllReduceOutputTp; }
};

}  // namespace

MOE_REGISTER(PlanStyle, RowwiseStyle);

}  // namespace moe::plan
