#pragma once
// Declarations only; see ../../README.md. Held by shared_ptr / unique_ptr
// in ProcessGroupGloo.hpp; created and destroyed inside libtorch.
namespace gloo::transport {
class Device;
class UnboundBuffer;
}  // namespace gloo::transport
