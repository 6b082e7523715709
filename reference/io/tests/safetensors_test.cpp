// Round trips, a hand-written file, and slice reads of reference/io.
#include <gtest/gtest.h>

#include "common/error.h"
#include "reference/io/safetensors.h"
#include "reference/io/tests/test_util.h"

namespace moe::io {
namespace {

using testing::bitwiseEqual;
using testing::errorOf;
using testing::TempDir;

// Bytes encode their origin: byte i of a tensor is (i * 131 + seed) mod 256,
// so every bit pattern (NaN payloads, -0, denormals) occurs and a shifted or
// misplaced element changes the bytes.
at::Tensor patterned(at::ScalarType type, std::vector<int64_t> shape, int64_t seed) {
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  const int64_t elem = c10::elementSize(type);
  at::Tensor bytes = at::arange(numel * elem, at::kLong).mul(131).add(seed).remainder(256).to(at::kByte);
  return bytes.view(type).reshape(shape);
}



TEST(SafetensorsRoundTrip, EveryDtypeIsBitwiseIdentical) {
  TempDir dir;
  const std::string path = dir.file("all.safetensors");
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  int64_t seed = 0;
  for (at::ScalarType type : {at::kDouble, at::kFloat, at::kHalf, at::kBFloat16, at::kLong}) {
    const std::string n = c10::toString(type);
    tensors.emplace_back(n + ".matrix", patterned(type, {3, 4}, ++seed));
    tensors.emplace_back(n + ".scalar", patterned(type, {}, ++seed));
    tensors.emplace_back(n + ".empty", patterned(type, {0, 3}, ++seed));
    tensors.emplace_back(n + ".rank4", patterned(type, {2, 1, 3, 2}, ++seed));
  }
  writeSafetensors(path, tensors, {/*metadata=*/{{"format", "pt"}, {"origin", "test"}}});

  SafetensorsReader reader(path);
  EXPECT_EQ(reader.names().size(), tensors.size());
  EXPECT_EQ(reader.metadata(), (std::map<std::string, std::string>{{"format", "pt"}, {"origin", "test"}}));
  for (const auto& [name, t] : tensors) {
    EXPECT_EQ(reader.shape(name), t.sizes().vec()) << name;
    EXPECT_EQ(reader.scalarType(name), t.scalar_type()) << name;
    EXPECT_TRUE(bitwiseEqual(reader.read(name), t)) << name;
  }
}

TEST(SafetensorsRoundTrip, NonContiguousTensorsAreWrittenByValue) {
  TempDir dir;
  const std::string path = dir.file("t.safetensors");
  at::Tensor base = patterned(at::kFloat, {4, 6}, 3);
  at::Tensor transposed = base.t();                  // [6, 4], not contiguous
  at::Tensor strided = base.slice(1, 0, 6, 2);       // [4, 3]
  writeSafetensors(path, {{"t", transposed}, {"s", strided}});
  SafetensorsReader reader(path);
  EXPECT_TRUE(bitwiseEqual(reader.read("t"), transposed));
  EXPECT_TRUE(bitwiseEqual(reader.read("s"), strided));
}

TEST(SafetensorsWriter, OutputIsDeterministicInGivenOrderAndAligned) {
  TempDir dir;
  std::vector<std::pair<std::string, at::Tensor>> tensors = {
      {"zeta", patterned(at::kFloat, {3}, 1)}, {"alpha", patterned(at::kHalf, {5}, 2)}};
  writeSafetensors(dir.file("a"), tensors);
  writeSafetensors(dir.file("b"), tensors);
  const std::string bytes = testing::readBytes(dir.file("a"));
  EXPECT_EQ(bytes, testing::readBytes(dir.file("b")));

  SafetensorsReader reader(dir.file("a"));
  // The data section follows the given order, not the name order.
  EXPECT_EQ(reader.entry("zeta").begin, 0u);
  EXPECT_EQ(reader.entry("zeta").end, 12u);
  EXPECT_EQ(reader.entry("alpha").begin, 12u);
  EXPECT_EQ(reader.header().dataStart() % 8, 0u);
  // Padding (if any) is spaces after the closing brace.
  const std::string json = bytes.substr(8, reader.header().headerSize);
  const size_t close = json.find_last_of('}');
  EXPECT_EQ(json.find_first_not_of(' ', close + 1), std::string::npos);
}

TEST(SafetensorsWriter, RejectsBadInput) {
  TempDir dir;
  const std::string path = dir.file("bad.safetensors");
  at::Tensor t = at::zeros({2});
  EXPECT_NE(errorOf([&] { writeSafetensors(path, {{"x", t}, {"x", t}}); })
                .find("tensor 'x' is given twice"), std::string::npos);
  EXPECT_NE(errorOf([&] { writeSafetensors(path, {{"", t}}); }).find("empty name"),
            std::string::npos);
  EXPECT_NE(errorOf([&] { writeSafetensors(path, {{"__metadata__", t}}); }).find("reserved"),
            std::string::npos);
  const std::string msg = errorOf([&] { writeSafetensors(path, {{"i", at::zeros({2}, at::kInt)}}); });
  EXPECT_NE(msg.find("tensor 'i': dtype Int is not supported"), std::string::npos) << msg;
  EXPECT_FALSE(std::filesystem::exists(path));  // nothing half-written is left
}

// The file is assembled here byte by byte from the format description, so
// the reader is checked against the spec rather than against our writer.
TEST(SafetensorsReader, HandWrittenFileLoads) {
  const std::string header =
      R"({"__metadata__":{"format":"pt"},)"
      R"("w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
      R"("i":{"dtype":"I64","shape":[3],"data_offsets":[16,40]},)"
      R"("h":{"dtype":"BF16","shape":[2],"data_offsets":[40,44]},)"
      R"("d":{"dtype":"F64","shape":[],"data_offsets":[44,52]},)"
      R"("f":{"dtype":"F16","shape":[1,2],"data_offsets":[52,56]}})"
      "     ";  // trailing space padding, as Hugging Face writes it
  const unsigned char data[] = {
      // w F32 [[1.5, -2.0], [0.25, 3.0]]: 0x3FC00000 0xC0000000 0x3E800000 0x40400000
      0x00, 0x00, 0xC0, 0x3F, 0x00, 0x00, 0x00, 0xC0,
      0x00, 0x00, 0x80, 0x3E, 0x00, 0x00, 0x40, 0x40,
      // i I64 [1, -1, 300]
      0x01, 0, 0, 0, 0, 0, 0, 0,
      0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
      0x2C, 0x01, 0, 0, 0, 0, 0, 0,
      // h BF16 [1.0, -0.5]: 0x3F80 0xBF00
      0x80, 0x3F, 0x00, 0xBF,
      // d F64 0.1 = 0x3FB999999999999A
      0x9A, 0x99, 0x99, 0x99, 0x99, 0x99, 0xB9, 0x3F,
      // f F16 [[1.0, -2.0]]: 0x3C00 0xC000
      0x00, 0x3C, 0x00, 0xC0};
  TempDir dir;
  const std::string path = dir.file("hand.safetensors");
  testing::writeBytes(path, testing::sizePrefix(header.size()) + header +
                                std::string(reinterpret_cast<const char*>(data), sizeof(data)));

  SafetensorsReader reader(path);
  EXPECT_EQ(reader.names(), (std::vector<std::string>{"d", "f", "h", "i", "w"}));
  EXPECT_EQ(reader.metadata().at("format"), "pt");
  at::Tensor w = reader.read("w");
  EXPECT_EQ(w.scalar_type(), at::kFloat);
  EXPECT_EQ(w.sizes().vec(), (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(w[0][0].item<float>(), 1.5f);
  EXPECT_EQ(w[0][1].item<float>(), -2.0f);
  EXPECT_EQ(w[1][0].item<float>(), 0.25f);
  EXPECT_EQ(w[1][1].item<float>(), 3.0f);
  at::Tensor i = reader.read("i");
  EXPECT_EQ(i.scalar_type(), at::kLong);
  EXPECT_EQ(i[0].item<int64_t>(), 1);
  EXPECT_EQ(i[1].item<int64_t>(), -1);
  EXPECT_EQ(i[2].item<int64_t>(), 300);
  at::Tensor h = reader.read("h");
  EXPECT_EQ(h.scalar_type(), at::kBFloat16);
  EXPECT_EQ(h[0].item<float>(), 1.0f);
  EXPECT_EQ(h[1].item<float>(), -0.5f);
  at::Tensor d = reader.read("d");
  EXPECT_EQ(d.dim(), 0);
  EXPECT_EQ(d.item<double>(), 0.1);
  at::Tensor f = reader.read("f");
  EXPECT_EQ(f.scalar_type(), at::kHalf);
  EXPECT_EQ(f[0][0].item<float>(), 1.0f);
  EXPECT_EQ(f[0][1].item<float>(), -2.0f);
}

TEST(SafetensorsReader, UnknownTensorAndMissingFileNameThePath) {
  TempDir dir;
  const std::string path = dir.file("m.safetensors");
  writeSafetensors(path, {{"a", at::zeros({1})}});
  SafetensorsReader reader(path);
  std::string msg = errorOf([&] { reader.read("b"); });
  EXPECT_NE(msg.find(path + ": no tensor 'b' (1 tensors: a)"), std::string::npos) << msg;
  msg = errorOf([&] { SafetensorsReader missing(dir.file("nope")); });
  EXPECT_NE(msg.find("nope: cannot open"), std::string::npos) << msg;
}

class SafetensorsSlice : public ::testing::Test {
 protected:
  void SetUp() override {
    full_ = patterned(at::kFloat, {6, 5, 4}, 11);
    writeSafetensors(dir_.file("s"), {{"pad", at::zeros({7})}, {"x", full_}});
    reader_ = std::make_unique<SafetensorsReader>(dir_.file("s"));
  }
  TempDir dir_;
  at::Tensor full_;  // [6, 5, 4] F32
  std::unique_ptr<SafetensorsReader> reader_;
};

TEST_F(SafetensorsSlice, Dim0SliceReadsOnlyItsBytes) {
  const uint64_t before = reader_->bytesRead();
  at::Tensor s = reader_->readSlice("x", /*dim=*/0, /*start=*/2, /*length=*/3);
  const uint64_t read = reader_->bytesRead() - before;
  EXPECT_TRUE(bitwiseEqual(s, full_.narrow(0, 2, 3)));
  EXPECT_EQ(read, 3u * 5 * 4 * sizeof(float));
  EXPECT_LT(read, static_cast<uint64_t>(full_.numel()) * sizeof(float));
  EXPECT_LT(reader_->bytesRead(), reader_->fileSize());
}

TEST_F(SafetensorsSlice, EveryRangeMatchesNarrowAndReadsExactlyItsBytes) {
  const std::vector<SliceRange> perDim[3] = {
      {{0, 6}, {1, 2}, {5, 1}, {3, 0}},
      {{0, 5}, {0, 1}, {2, 3}, {4, 1}},
      {{0, 4}, {1, 2}, {3, 1}, {0, 3}}};
  for (const SliceRange& a : perDim[0])
    for (const SliceRange& b : perDim[1])
      for (const SliceRange& c : perDim[2]) {
        const uint64_t before = reader_->bytesRead();
        at::Tensor s = reader_->readSlice("x", {a, b, c});
        const at::Tensor want =
            full_.narrow(0, a.start, a.length).narrow(1, b.start, b.length).narrow(2, c.start, c.length);
        EXPECT_TRUE(bitwiseEqual(s, want))
            << "[" << a.start << "+" << a.length << ", " << b.start << "+" << b.length << ", "
            << c.start << "+" << c.length << "]";
        EXPECT_EQ(reader_->bytesRead() - before,
                  static_cast<uint64_t>(want.numel()) * sizeof(float));
      }
}

TEST_F(SafetensorsSlice, BadRangesAreRejected) {
  std::string msg = errorOf([&] { reader_->readSlice("x", 1, 4, 2); });
  EXPECT_NE(msg.find("tensor 'x': slice of dim 1 [4, 4+2) is out of range for shape [6, 5, 4]"),
            std::string::npos) << msg;
  msg = errorOf([&] { reader_->readSlice("x", 3, 0, 1); });
  EXPECT_NE(msg.find("slice dim 3 out of range"), std::string::npos) << msg;
  msg = errorOf([&] { reader_->readSlice("x", {{0, 1}, {0, 1}, {0, 1}, {0, 1}}); });
  EXPECT_NE(msg.find("4 slice ranges for a tensor of shape [6, 5, 4]"), std::string::npos) << msg;
  msg = errorOf([&] { reader_->readSlice("x", 0, -1, 2); });
  EXPECT_NE(msg.find("out of range"), std::string::npos) << msg;
}

TEST(MapTensorSource, SliceMatchesNarrowAndOwnsItsStorage) {
  at::Tensor t = patterned(at::kFloat, {4, 3}, 5);
  MapTensorSource source({{"t", t}});
  at::Tensor s = source.readSlice("t", 1, 1, 2);
  EXPECT_TRUE(bitwiseEqual(s, t.narrow(1, 1, 2)));
  s.fill_(0);
  EXPECT_TRUE(bitwiseEqual(source.read("t"), patterned(at::kFloat, {4, 3}, 5)));
}

}  // namespace
}  // namespace moe::io
