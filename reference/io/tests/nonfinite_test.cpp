// Non-finite values in checkpoint tensors are named (file, tensor, first
// index, count), never loaded silently (issue 17).
#include <gtest/gtest.h>

#include <limits>

#include "common/error.h"
#include "reference/io/nonfinite.h"

namespace moe::io {
namespace {

const double kNan = std::numeric_limits<double>::quiet_NaN();
const double kInf = std::numeric_limits<double>::infinity();

TEST(NonFiniteScan, FindsTheFirstIndexAndCounts) {
  at::Tensor t = at::zeros({3, 4});
  EXPECT_FALSE(scanNonFinite(t).found());
  t[1][2] = kNan;
  t[2][0] = -kInf;
  const NonFiniteScan s = scanNonFinite(t);
  EXPECT_EQ(s.count, 2);
  EXPECT_EQ(s.numel, 12);
  EXPECT_EQ(s.firstFlat, 6);
  EXPECT_EQ(s.firstIndex, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(describeNonFinite(s), "index [1, 2] (flat 6) is nan; 2 of 12 elements are non-finite");
  // bf16 keeps Inf; integers are always finite.
  at::Tensor b = at::ones({4}, at::kBFloat16);
  b[3] = kInf;
  EXPECT_EQ(describeNonFinite(scanNonFinite(b)), "index [3] (flat 3) is inf; 1 of 4 elements is non-finite");
  EXPECT_FALSE(scanNonFinite(at::arange(5, at::kLong)).found());
  EXPECT_FALSE(scanNonFinite(at::zeros({0, 3})).found());
}

TEST(NonFiniteScan, RequireFiniteTensorsNamesWhereTheTensorTheIndexAndTheCount) {
  at::Tensor w = at::ones({2, 3});
  w[0][0] = kNan;
  MapTensorSource src({{"a.weight", at::ones({2})}, {"lm_head.weight", w}}, "ckpt.safetensors");
  try {
    requireFiniteTensors(src);
    FAIL() << "no error";
  } catch (const HarnessError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("ckpt.safetensors: tensor 'lm_head.weight' holds non-finite values: index [0, 0] (flat 0) is "
                     "nan; 1 of 6 elements is non-finite"),
              std::string::npos)
        << m;
    EXPECT_NE(m.find("--allow-nonfinite-checkpoint"), std::string::npos) << m;
  }
  EXPECT_NO_THROW(requireFiniteTensors(src, {"a.weight"}));
}

}  // namespace
}  // namespace moe::io
