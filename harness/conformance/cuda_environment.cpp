// The CUDA part of the recorded environment (run_result.h
// cudaEnvironmentJson): the NCCL libtorch carries, the CUDA driver and the
// GPU models. Compiled only when libtorch has CUDA (MOE_WITH_NCCL), with the
// CUDA headers on this file alone. Nothing here may fail a run: a machine
// without a driver or GPU records "none".
#include <dlfcn.h>

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/cuda/nccl.h>

#include "harness/conformance/run_result.h"

namespace moe::conformance {

nlohmann::json cudaEnvironmentJson() {
  nlohmann::json j;
  // torch encodes the NCCL version as major << 32 | minor << 16 | patch
  // (torch.cuda.nccl.version() decodes it the same way).
  const uint64_t v = torch::cuda::nccl::version();
  j["nccl"] = std::to_string(v >> 32) + "." + std::to_string((v >> 16) & 0xffff) + "." + std::to_string(v & 0xffff);
  // cudaDriverGetVersion of the CUDA runtime libtorch loaded (looked up in
  // the process rather than linked, so there is no second runtime copy):
  // 0 without a driver.
  using DriverGetVersion = int (*)(int*);
  int driver = 0;
  if (auto fn = reinterpret_cast<DriverGetVersion>(dlsym(RTLD_DEFAULT, "cudaDriverGetVersion")))
    if (fn(&driver) != 0) driver = 0;
  j["cuda_driver"] = driver > 0 ? std::to_string(driver / 1000) + "." + std::to_string((driver % 1000) / 10) : "none";
  const int n = c10::cuda::device_count();  // 0 without a driver or GPU; never throws
  nlohmann::json gpus = nlohmann::json::array();
  for (int i = 0; i < n; ++i) gpus.push_back(at::cuda::getDeviceProperties(static_cast<c10::DeviceIndex>(i))->name);
  j["gpus"] = n > 0 ? gpus : nlohmann::json("none");
  return j;
}

}  // namespace moe::conformance
