// libFuzzer entry point of one target of fuzz/targets.h, chosen at compile
// time: -DMOE_FUZZ_TARGET=moe::fuzz::caseFile (fuzz/CMakeLists.txt).
#include "fuzz/targets.h"

#ifndef MOE_FUZZ_TARGET
#error "define MOE_FUZZ_TARGET to one function of fuzz/targets.h"
#endif

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // A HarnessError is handled inside the target; any other exception leaves
  // this function, std::terminate aborts, and libFuzzer keeps the input.
  MOE_FUZZ_TARGET(data, size);
  return 0;
}
