#pragma once
// The safetensors header: parsing with full validation, and encoding.
//
// This translation unit is deliberately torch-free (only the standard library
// and nlohmann-json). fuzz/targets.h fuzzes it (safetensorsHeader).
//
// File format (https://huggingface.co/docs/safetensors, "Format"):
//   bytes [0, 8)        N, the header size, little-endian u64
//   bytes [8, 8+N)      UTF-8 JSON object (may be padded with trailing spaces)
//   bytes [8+N, end)    the data section, raw little-endian tensor bytes
// The header maps tensor names to {"dtype", "shape", "data_offsets"}, where
// data_offsets = [begin, end) is relative to the start of the data section,
// plus an optional "__metadata__" object of string -> string.
//
// Validation policy (the strict one of the reference implementation):
//  - N <= kMaxHeaderBytes and 8 + N <= file size;
//  - the header is one JSON object with no duplicate keys at any level;
//  - each tensor entry has exactly the keys dtype, shape, data_offsets;
//    dtype is one of kSupportedDtypes; shape is an array of non-negative
//    integers (each <= INT64_MAX); data_offsets is [begin, end] of
//    non-negative integers with begin <= end <= data section size;
//  - end - begin == numel(shape) * dtype size (computed without overflow);
//  - the tensors tile the data section exactly: no two overlap, there is no
//    hole between them and no trailing byte after the last one;
//  - "__metadata__", when present, is an object of string values.
// Every violation throws moe::HarnessError "<where>: <what is wrong>", naming
// the tensor when one is involved. No input makes the parser crash.
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace moe::io {

// Message helpers of the io parsers. quoteName: `name` in single quotes,
// control bytes escaped, at most 80 characters (then "..."), so a garbage
// name cannot flood or garble an error message. previewJson: a JSON value
// as text, at most 60 characters.
std::string quoteName(const std::string& name);
std::string previewJson(const nlohmann::json& v);

// Largest accepted header (the reference implementation's limit as well):
// bounds the memory a hostile size prefix can make us allocate.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;
// Bytes of the little-endian u64 size prefix.
constexpr uint64_t kSizePrefixBytes = 8;
// Key of the optional string -> string metadata object.
constexpr const char* kMetadataKey = "__metadata__";

enum class SafetensorsDtype { kF64, kF32, kF16, kBF16, kI64 };

// "F32", "BF16", ... as spelled in headers.
const char* dtypeName(SafetensorsDtype dtype);
// Bytes per element.
uint64_t dtypeSize(SafetensorsDtype dtype);
// The dtype spelled `name`, or nullopt for a name we do not support.
std::optional<SafetensorsDtype> dtypeFromName(const std::string& name);
// "F64, F32, F16, BF16, I64", for error messages.
std::string supportedDtypeNames();

// One tensor of the header. Offsets are relative to the data section.
struct TensorEntry {
  std::string name;
  SafetensorsDtype dtype = SafetensorsDtype::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;
  uint64_t end = 0;

  uint64_t numel() const;  // product of shape (1 for a scalar)
  uint64_t nbytes() const { return end - begin; }
  bool operator==(const TensorEntry& o) const;
};

struct SafetensorsHeader {
  uint64_t headerSize = 0;  // N, the JSON bytes including padding
  uint64_t dataSize = 0;    // bytes of the data section
  std::vector<TensorEntry> tensors;  // sorted by name
  std::map<std::string, std::string> metadata;

  // Offset of the data section from the start of the file.
  uint64_t dataStart() const { return kSizePrefixBytes + headerSize; }
  // The entry called `name`, or nullptr.
  const TensorEntry* find(const std::string& name) const;
};

// Reads and bounds-checks the size prefix N.
// data: the first `len` bytes of a file of `fileSize` bytes (len <= fileSize).
// Throws HarnessError (prefixed by `where`) when the file is shorter than the
// prefix, N > kMaxHeaderBytes or 8 + N > fileSize.
uint64_t parseHeaderSize(const uint8_t* data, size_t len, uint64_t fileSize,
                         const std::string& where);

// Parses and validates the whole header (see the policy above).
// data: the first `len` bytes of a file of `fileSize` bytes; it must hold at
// least the size prefix and the N header bytes (a shorter buffer is reported
// as a truncated header). Bytes past 8 + N are not looked at.
SafetensorsHeader parseSafetensorsHeader(const uint8_t* data, size_t len,
                                         uint64_t fileSize,
                                         const std::string& where);

// Encodes the size prefix + JSON header for `tensors` (offsets as given) and
// `metadata`. Keys are emitted sorted (deterministic output) and the JSON is
// padded with spaces so the data section starts at a multiple of 8 bytes.
// The result parses back to the same entries when the offsets tile the data.
std::string encodeSafetensorsHeader(
    const std::vector<TensorEntry>& tensors,
    const std::map<std::string, std::string>& metadata);

// "[2, 3]" for error messages.
std::string formatShape(const std::vector<int64_t>& shape);

}  // namespace moe::io
