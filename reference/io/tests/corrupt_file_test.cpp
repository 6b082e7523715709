// Corrupt safetensors files: each must be rejected by SafetensorsReader with a
// HarnessError that names the file, and the tensor and problem.
#include <gtest/gtest.h>

#include "common/error.h"
#include "reference/io/safetensors.h"
#include "reference/io/tests/test_util.h"

namespace moe::io {
namespace {

using testing::fileWithHeader;
using testing::sizePrefix;

struct CorruptCase {
  std::string name;                   // gtest parameter name
  std::string bytes;                  // the whole file
  std::vector<std::string> expected;  // substrings of the error message
};

// Keeps ctest names short and stable (gtest would print the raw bytes).
void PrintTo(const CorruptCase& c, std::ostream* os) { *os << c.name; }

// `{"x": <entry>}` with `dataBytes` zero bytes of data.
std::string oneTensor(const std::string& entry, size_t dataBytes) {
  return fileWithHeader(R"({"x":)" + entry + "}", dataBytes);
}

std::vector<CorruptCase> corruptCases() {
  const std::string okX = R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  return {
      {"empty_file", "", {"file is empty"}},
      {"truncated_size_prefix", std::string("\x02\x00\x00", 3),
       {"file is 3 bytes, too short for the 8-byte header size prefix"}},
      {"header_size_past_file", sizePrefix(1000) + "{}",
       {"header size 1000 exceeds the file (2 bytes after the size prefix)"}},
      {"header_size_huge", sizePrefix(uint64_t{1} << 63) + "{}", {"exceeds the limit of 104857600 bytes"}},
      {"header_size_zero", sizePrefix(0) + "{}", {"header is empty"}},
      {"invalid_json", fileWithHeader(R"({"x":{"dtype":)", 0), {"header is not valid JSON"}},
      {"trailing_garbage_in_header", fileWithHeader("{} x", 0), {"header is not valid JSON"}},
      {"invalid_utf8", fileWithHeader("{\"\xff\":1}", 0), {"header is not valid JSON", "UTF-8"}},
      {"header_not_object", fileWithHeader("[1,2]", 0), {"header is not a JSON object"}},
      {"entry_not_object", oneTensor("5", 0), {"tensor 'x': entry is an integer, not an object"}},
      {"missing_dtype", oneTensor(R"({"shape":[2],"data_offsets":[0,8]})", 8),
       {"tensor 'x': missing 'dtype'"}},
      {"missing_shape", oneTensor(R"({"dtype":"F32","data_offsets":[0,8]})", 8),
       {"tensor 'x': missing 'shape'"}},
      {"missing_data_offsets", oneTensor(R"({"dtype":"F32","shape":[2]})", 8),
       {"tensor 'x': missing 'data_offsets'"}},
      {"extra_key", oneTensor(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8],"foo":1})", 8),
       {"tensor 'x': unexpected key 'foo'"}},
      {"dtype_not_string", oneTensor(R"({"dtype":4,"shape":[2],"data_offsets":[0,8]})", 8),
       {"tensor 'x': dtype is an integer, not a string"}},
      {"unknown_dtype", oneTensor(R"({"dtype":"F8","shape":[2],"data_offsets":[0,2]})", 2),
       {"tensor 'x': unsupported dtype 'F8' (supported: F64, F32, F16, BF16, I64)"}},
      {"unsupported_dtype_i32", oneTensor(R"({"dtype":"I32","shape":[2],"data_offsets":[0,8]})", 8),
       {"tensor 'x': unsupported dtype 'I32'"}},
      {"shape_not_array", oneTensor(R"({"dtype":"F32","shape":"2","data_offsets":[0,8]})", 8),
       {"tensor 'x': shape is a string, not an array"}},
      {"negative_dim", oneTensor(R"({"dtype":"F32","shape":[2,-1],"data_offsets":[0,8]})", 8),
       {"tensor 'x': shape[1] is -1; dims must be non-negative integers"}},
      {"non_integer_dim", oneTensor(R"({"dtype":"F32","shape":[2.5],"data_offsets":[0,8]})", 8),
       {"tensor 'x': shape[0] is 2.5"}},
      {"nested_dim", oneTensor(R"({"dtype":"F32","shape":[[2]],"data_offsets":[0,8]})", 8),
       {"tensor 'x': shape[0] is [2]"}},
      {"dim_above_int64", oneTensor(R"({"dtype":"F32","shape":[9223372036854775808],"data_offsets":[0,8]})", 8),
       {"tensor 'x': shape[0] = 9223372036854775808 is larger than the largest int64"}},
      {"dim_product_overflow",
       oneTensor(R"({"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]})", 8),
       {"tensor 'x': F32 [4611686018427387904, 4] has more bytes than fit in 64 bits"}},
      {"offsets_not_a_pair", oneTensor(R"({"dtype":"F32","shape":[2],"data_offsets":[0]})", 8),
       {"tensor 'x': data_offsets must be [begin, end] of non-negative integers, got [0]"}},
      {"offsets_negative", oneTensor(R"({"dtype":"F32","shape":[2],"data_offsets":[-8,0]})", 8),
       {"tensor 'x': data_offsets must be [begin, end]"}},
      {"offsets_reversed", oneTensor(R"({"dtype":"F32","shape":[2],"data_offsets":[8,0]})", 8),
       {"tensor 'x': data_offsets [8, 0] are reversed"}},
      {"offsets_past_end", oneTensor(R"({"dtype":"F32","shape":[16],"data_offsets":[0,64]})", 16),
       {"tensor 'x': data_offsets [0, 64] end past the data section (16 bytes)"}},
      {"numel_size_mismatch", oneTensor(R"({"dtype":"F32","shape":[2,2],"data_offsets":[0,12]})", 12),
       {"tensor 'x': data_offsets [0, 12] give 12 bytes but F32 [2, 2] needs 16"}},
      {"overlap",
       fileWithHeader(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                      R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12),
       {"tensors 'a' [0, 8] and 'b' [4, 12] overlap"}},
      {"hole",
       fileWithHeader(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                      R"("b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})", 20),
       {"hole: bytes [8, 12) belong to no tensor (before tensor 'b')"}},
      {"trailing_bytes", oneTensor(okX, 12), {"4 trailing bytes"}},
      {"metadata_not_object", fileWithHeader(R"({"__metadata__":5})", 0),
       {"__metadata__ is an integer, not an object"}},
      {"metadata_value_not_string", fileWithHeader(R"({"__metadata__":{"step":1}})", 0),
       {"__metadata__ 'step' is an integer, not a string"}},
      {"duplicate_tensor", fileWithHeader(R"({"x":)" + okX + R"(,"x":)" + okX + "}", 8),
       {"duplicate key 'x' in header"}},
      {"duplicate_field",
       oneTensor(R"({"dtype":"F32","dtype":"F16","shape":[2],"data_offsets":[0,8]})", 8),
       {"tensor 'x': duplicate key 'dtype'"}},
      {"empty_tensor_name", fileWithHeader(R"({"":)" + okX + "}", 8), {"a tensor has an empty name"}},
      {"deep_nesting", fileWithHeader(R"({"x":)" + std::string(100, '[') + std::string(100, ']') + "}", 0),
       {"nests deeper than 64 levels"}},
  };
}

class CorruptFile : public ::testing::TestWithParam<CorruptCase> {};

TEST_P(CorruptFile, IsRejectedWithAClearMessage) {
  const CorruptCase& c = GetParam();
  testing::TempDir dir;
  const std::string path = dir.file(c.name + ".safetensors");
  testing::writeBytes(path, c.bytes);
  try {
    SafetensorsReader reader(path);
    FAIL() << "accepted a corrupt file; tensors: " << reader.names().size();
  } catch (const HarnessError& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << "message does not start with the path: " << msg;
    for (const std::string& want : c.expected)
      EXPECT_NE(msg.find(want), std::string::npos) << "missing '" << want << "' in: " << msg;
  }
}

INSTANTIATE_TEST_SUITE_P(Safetensors, CorruptFile, ::testing::ValuesIn(corruptCases()),
                         [](const ::testing::TestParamInfo<CorruptCase>& info) {
                           return info.param.name;
                         });

// The parser must accept what the spec allows at the edges.
TEST(SafetensorsHeaderEdges, EmptyHeaderZeroSizeTensorsAndPaddingAreValid) {
  const std::string file = fileWithHeader(
      R"({"e":{"dtype":"F16","shape":[0,3],"data_offsets":[0,0]},)"
      R"("s":{"dtype":"F64","shape":[],"data_offsets":[0,8]}}   )", 8);
  const auto* data = reinterpret_cast<const uint8_t*>(file.data());
  SafetensorsHeader h = parseSafetensorsHeader(data, file.size(), file.size(), "edge");
  ASSERT_EQ(h.tensors.size(), 2u);
  EXPECT_EQ(h.find("e")->numel(), 0u);
  EXPECT_EQ(h.find("s")->numel(), 1u);
  EXPECT_EQ(h.dataSize, 8u);

  const std::string empty = fileWithHeader("{}", 0);
  h = parseSafetensorsHeader(reinterpret_cast<const uint8_t*>(empty.data()), empty.size(),
                             empty.size(), "empty");
  EXPECT_TRUE(h.tensors.empty());
}

TEST(SafetensorsHeaderEdges, ShortBufferIsATruncatedHeader) {
  const std::string file = fileWithHeader("{}", 0);
  const auto* data = reinterpret_cast<const uint8_t*>(file.data());
  try {
    parseSafetensorsHeader(data, 9, file.size(), "f");
    FAIL() << "accepted a truncated buffer";
  } catch (const HarnessError& e) {
    EXPECT_NE(std::string(e.what()).find("f: header truncated: 1 of 2 bytes"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace moe::io
