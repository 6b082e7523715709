// libFuzzer target for the safetensors header parser (torch-free).
//
// Properties checked on every input, taken as a whole file:
//  - the parser either returns or throws moe::HarnessError; any other
//    exception, crash, leak or sanitizer report is a bug;
//  - a header it accepts re-encodes (encodeSafetensorsHeader) to a header
//    that parses back to the same entries and metadata.
#include <cstdint>
#include <cstdlib>

#include "common/error.h"
#include "reference/io/safetensors_header.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  moe::io::SafetensorsHeader h;
  try {
    h = moe::io::parseSafetensorsHeader(data, size, size, "fuzz");
  } catch (const moe::HarnessError&) {
    return 0;
  }
  const std::string again = moe::io::encodeSafetensorsHeader(h.tensors, h.metadata);
  const auto* bytes = reinterpret_cast<const uint8_t*>(again.data());
  const moe::io::SafetensorsHeader h2 = moe::io::parseSafetensorsHeader(
      bytes, again.size(), again.size() + h.dataSize, "fuzz re-encoded");
  if (!(h2.tensors == h.tensors) || h2.metadata != h.metadata ||
      h2.dataSize != h.dataSize)
    std::abort();
  return 0;
}
