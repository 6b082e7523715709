#include <string>

#include "common/error.h"
#include "fuzz/targets.h"
#include "reference/io/safetensors.h"
#include "reference/io/safetensors_header.h"

namespace moe::fuzz {

void safetensorsHeader(const uint8_t* data, size_t size) {
  io::SafetensorsHeader h;
  try {
    h = io::parseSafetensorsHeader(data, size, size, "fuzz");
  } catch (const HarnessError&) {
    return;
  }
  // An accepted header re-encodes to one that parses back to the same entries.
  const std::string again = io::encodeSafetensorsHeader(h.tensors, h.metadata);
  const auto* bytes = reinterpret_cast<const uint8_t*>(again.data());
  const io::SafetensorsHeader h2 =
      io::parseSafetensorsHeader(bytes, again.size(), again.size() + h.dataSize, "fuzz re-encoded");
  MOE_ASSERT(h2.tensors == h.tensors && h2.metadata == h.metadata && h2.dataSize == h.dataSize,
             "a re-encoded header parses to different entries");
  // The same bytes as a checkpoint file: the reader validates the same header
  // and reads every tensor from the data section.
  try {
    const io::SafetensorsReader reader(writeTempFile("model.safetensors", data, size));
    MOE_ASSERT_EQ(reader.names().size(), h.tensors.size());
    for (const auto& name : reader.names()) {
      const at::Tensor t = reader.read(name);
      MOE_ASSERT_EQ(static_cast<uint64_t>(t.numel()), reader.entry(name).numel(), name);
    }
  } catch (const HarnessError&) {
    // e.g. a tensor too large to allocate is refused, not a finding
  }
}

}  // namespace moe::fuzz
