#include "reference/io/safetensors_header.h"

#include <algorithm>
#include <limits>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "reference/io/strict_json.h"

namespace moe::io {
namespace {

using nlohmann::json;

// Deeper nesting than this cannot be a valid header (which nests 3 levels);
// the bound keeps hostile inputs from building huge DOM trees of arrays.
constexpr int kMaxJsonDepth = 64;

struct DtypeInfo {
  SafetensorsDtype dtype;
  const char* name;
  uint64_t size;
};
constexpr DtypeInfo kDtypes[] = {
    {SafetensorsDtype::kF64, "F64", 8},
    {SafetensorsDtype::kF32, "F32", 4},
    {SafetensorsDtype::kF16, "F16", 2},
    {SafetensorsDtype::kBF16, "BF16", 2},
    {SafetensorsDtype::kI64, "I64", 8},
};

const DtypeInfo& info(SafetensorsDtype dtype) {
  for (const DtypeInfo& d : kDtypes)
    if (d.dtype == dtype) return d;
  MOE_ASSERT(false, "unhandled SafetensorsDtype ", static_cast<int>(dtype));
  return kDtypes[0];
}

std::string typeOf(const json& v) {
  if (v.is_number_float()) return "a non-integer number";
  if (v.is_number_integer()) return "an integer";
  return std::string("a ") + v.type_name();
}


[[noreturn]] void failAt(const std::string& where, const std::string& what) {
  fail(where, ": ", what);
}

// Reads a non-negative JSON integer; nullopt for anything else.
std::optional<uint64_t> asUnsigned(const json& v) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer() && v.get<int64_t>() >= 0)  // "-0"
    return static_cast<uint64_t>(v.get<int64_t>());
  return std::nullopt;
}

json parseJson(const uint8_t* begin, const uint8_t* end,
               const std::string& where) {
  // A checkpoint with two entries for one name is ambiguous (strict_json.h).
  StrictJsonOptions o;
  o.maxDepth = kMaxJsonDepth;
  o.onTooDeep = [&] {
    failAt(where, str("header JSON nests deeper than ", kMaxJsonDepth, " levels"));
  };
  o.onDuplicate = [&](const std::vector<std::string>& enclosing, const std::string& key) {
    if (enclosing.empty())
      failAt(where, "duplicate key " + quoteName(key) + " in header");
    if (enclosing.front() == kMetadataKey)
      failAt(where, std::string(kMetadataKey) + ": duplicate key " + quoteName(key));
    failAt(where, "tensor " + quoteName(enclosing.front()) + ": duplicate key " + quoteName(key));
  };
  try {
    return parseStrictJson(reinterpret_cast<const char*>(begin),
                           reinterpret_cast<const char*>(end), o);
  } catch (const json::exception& e) {
    failAt(where, std::string("header is not valid JSON: ") + e.what());
  }
}

std::vector<int64_t> parseShape(const json& v, const std::string& where,
                                const std::string& tensor) {
  if (!v.is_array())
    failAt(where, "tensor " + tensor + ": shape is " + typeOf(v) +
                      ", not an array");
  std::vector<int64_t> shape;
  for (size_t i = 0; i < v.size(); ++i) {
    const json& d = v[i];
    std::optional<uint64_t> dim = asUnsigned(d);
    if (!dim)
      failAt(where, str("tensor ", tensor, ": shape[", i, "] is ", previewJson(d),
                        "; dims must be non-negative integers"));
    if (*dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      failAt(where, str("tensor ", tensor, ": shape[", i, "] = ", *dim,
                        " is larger than the largest int64"));
    shape.push_back(static_cast<int64_t>(*dim));
  }
  return shape;
}

TensorEntry parseEntry(const std::string& name, const json& v,
                       uint64_t dataSize, const std::string& where) {
  const std::string tensor = quoteName(name);
  if (name.empty()) failAt(where, "a tensor has an empty name");
  if (!v.is_object())
    failAt(where, "tensor " + tensor + ": entry is " + typeOf(v) +
                      ", not an object");
  for (const char* key : {"dtype", "shape", "data_offsets"})
    if (!v.contains(key))
      failAt(where, "tensor " + tensor + ": missing '" + key + "'");
  for (auto it = v.begin(); it != v.end(); ++it)
    if (it.key() != "dtype" && it.key() != "shape" &&
        it.key() != "data_offsets")
      failAt(where, "tensor " + tensor + ": unexpected key " +
                        quoteName(it.key()));

  TensorEntry e;
  e.name = name;
  const json& dtype = v["dtype"];
  if (!dtype.is_string())
    failAt(where, "tensor " + tensor + ": dtype is " + typeOf(dtype) +
                      ", not a string");
  std::optional<SafetensorsDtype> d = dtypeFromName(dtype.get<std::string>());
  if (!d)
    failAt(where, "tensor " + tensor + ": unsupported dtype " +
                      quoteName(dtype.get<std::string>()) + " (supported: " +
                      supportedDtypeNames() + ")");
  e.dtype = *d;
  e.shape = parseShape(v["shape"], where, tensor);

  const json& offsets = v["data_offsets"];
  std::optional<uint64_t> begin, end;
  if (offsets.is_array() && offsets.size() == 2) {
    begin = asUnsigned(offsets[0]);
    end = asUnsigned(offsets[1]);
  }
  if (!begin || !end)
    failAt(where, "tensor " + tensor +
                      ": data_offsets must be [begin, end] of non-negative "
                      "integers, got " + previewJson(offsets));
  e.begin = *begin;
  e.end = *end;
  const std::string range = str("[", e.begin, ", ", e.end, "]");
  if (e.begin > e.end)
    failAt(where, "tensor " + tensor + ": data_offsets " + range +
                      " are reversed (begin > end)");
  if (e.end > dataSize)
    failAt(where, str("tensor ", tensor, ": data_offsets ", range,
                      " end past the data section (", dataSize, " bytes)"));

  // numel * size may overflow 64 bits for hostile shapes; a zero dim makes
  // the product 0 whatever the others are.
  uint64_t bytes = dtypeSize(e.dtype);
  bool overflow = false;
  const bool empty = std::find(e.shape.begin(), e.shape.end(), 0) != e.shape.end();
  if (empty) bytes = 0;
  for (int64_t dim : e.shape)
    if (!empty)
      overflow |= __builtin_mul_overflow(bytes, static_cast<uint64_t>(dim), &bytes);
  const std::string what =
      str(dtypeName(e.dtype), " ", formatShape(e.shape));
  if (overflow)
    failAt(where, "tensor " + tensor + ": " + what +
                      " has more bytes than fit in 64 bits");
  if (bytes != e.nbytes())
    failAt(where, str("tensor ", tensor, ": data_offsets ", range, " give ",
                      e.nbytes(), " bytes but ", what, " needs ", bytes));
  return e;
}

// The tensors must tile [0, dataSize): the reference implementation refuses
// holes (bytes no tensor owns could hide data) and overlaps (two tensors
// aliasing the same bytes).
void checkCoverage(const std::vector<TensorEntry>& tensors, uint64_t dataSize,
                   const std::string& where) {
  std::vector<const TensorEntry*> byOffset;
  for (const TensorEntry& e : tensors) byOffset.push_back(&e);
  std::sort(byOffset.begin(), byOffset.end(),
            [](const TensorEntry* a, const TensorEntry* b) {
              return std::tie(a->begin, a->end, a->name) <
                     std::tie(b->begin, b->end, b->name);
            });
  uint64_t covered = 0;
  const TensorEntry* prev = nullptr;
  for (const TensorEntry* e : byOffset) {
    if (e->begin < covered)
      failAt(where, str("tensors ", quoteName(prev->name), " [", prev->begin,
                        ", ", prev->end, "] and ", quoteName(e->name), " [",
                        e->begin, ", ", e->end, "] overlap"));
    if (e->begin > covered)
      failAt(where,
             str("data section has a hole: bytes [", covered, ", ", e->begin,
                 ") belong to no tensor (before tensor ", quoteName(e->name),
                 ")"));
    covered = e->end;
    prev = e;
  }
  if (covered < dataSize)
    failAt(where, str("data section has ", dataSize - covered,
                      " trailing bytes: it is ", dataSize,
                      " bytes but the tensors cover only ", covered));
}

}  // namespace

// Short, bounded rendering of a JSON value for messages: garbage headers can
// hold megabytes in one value.
std::string previewJson(const json& v) {
  std::string s = v.dump(-1, ' ', /*ensure_ascii=*/true,
                         json::error_handler_t::replace);
  constexpr size_t kMax = 60;
  if (s.size() > kMax) s = s.substr(0, kMax) + "...";
  return s;
}

// Quotes a name for messages, escaping control bytes and bounding the length.
std::string quoteName(const std::string& name) {
  std::string s = json(name).dump(-1, ' ', /*ensure_ascii=*/false,
                                  json::error_handler_t::replace);
  s = s.substr(1, s.size() - 2);  // drop JSON's double quotes
  constexpr size_t kMax = 80;
  if (s.size() > kMax) s = s.substr(0, kMax) + "...";
  return "'" + s + "'";
}

const char* dtypeName(SafetensorsDtype dtype) { return info(dtype).name; }
uint64_t dtypeSize(SafetensorsDtype dtype) { return info(dtype).size; }

std::optional<SafetensorsDtype> dtypeFromName(const std::string& name) {
  for (const DtypeInfo& d : kDtypes)
    if (name == d.name) return d.dtype;
  return std::nullopt;
}

std::string supportedDtypeNames() {
  std::string s;
  for (const DtypeInfo& d : kDtypes) s += (s.empty() ? "" : ", ") + std::string(d.name);
  return s;
}

std::string formatShape(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

uint64_t TensorEntry::numel() const {
  uint64_t n = 1;
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

bool TensorEntry::operator==(const TensorEntry& o) const {
  return name == o.name && dtype == o.dtype && shape == o.shape &&
         begin == o.begin && end == o.end;
}

const TensorEntry* SafetensorsHeader::find(const std::string& name) const {
  auto it = std::lower_bound(
      tensors.begin(), tensors.end(), name,
      [](const TensorEntry& e, const std::string& n) { return e.name < n; });
  return it != tensors.end() && it->name == name ? &*it : nullptr;
}

uint64_t parseHeaderSize(const uint8_t* data, size_t len, uint64_t fileSize,
                         const std::string& where) {
  MOE_ASSERT(len <= fileSize, "buffer of ", len, " bytes for a file of ",
             fileSize);
  if (fileSize == 0) failAt(where, "file is empty");
  if (len < kSizePrefixBytes)
    failAt(where, str("file is ", fileSize,
                      " bytes, too short for the 8-byte header size prefix"));
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | data[i];
  if (n > kMaxHeaderBytes)
    failAt(where, str("header size ", n, " exceeds the limit of ",
                      kMaxHeaderBytes, " bytes (100 MiB)"));
  if (n > fileSize - kSizePrefixBytes)
    failAt(where, str("header size ", n, " exceeds the file (",
                      fileSize - kSizePrefixBytes,
                      " bytes after the size prefix)"));
  return n;
}

SafetensorsHeader parseSafetensorsHeader(const uint8_t* data, size_t len,
                                         uint64_t fileSize,
                                         const std::string& where) {
  SafetensorsHeader h;
  h.headerSize = parseHeaderSize(data, len, fileSize, where);
  if (len - kSizePrefixBytes < h.headerSize)
    failAt(where, str("header truncated: ", len - kSizePrefixBytes, " of ",
                      h.headerSize, " bytes available"));
  h.dataSize = fileSize - kSizePrefixBytes - h.headerSize;
  if (h.headerSize == 0) failAt(where, "header is empty (size prefix is 0)");
  const uint8_t* json0 = data + kSizePrefixBytes;
  // The reference implementation requires the object to start right away;
  // only trailing padding may be whitespace.
  if (json0[0] != '{')
    failAt(where, "header is not a JSON object (it does not start with '{')");
  const json root = parseJson(json0, json0 + h.headerSize, where);
  if (!root.is_object())
    failAt(where, "header is " + typeOf(root) + ", not a JSON object");

  for (auto it = root.begin(); it != root.end(); ++it) {
    if (it.key() == kMetadataKey) {
      if (!it->is_object())
        failAt(where, std::string(kMetadataKey) + " is " + typeOf(*it) +
                          ", not an object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string())
          failAt(where, std::string(kMetadataKey) + " " + quoteName(m.key()) +
                            " is " + typeOf(*m) + ", not a string");
        h.metadata[m.key()] = m->get<std::string>();
      }
      continue;
    }
    // json objects iterate in key order, so `tensors` comes out sorted.
    h.tensors.push_back(parseEntry(it.key(), *it, h.dataSize, where));
  }
  checkCoverage(h.tensors, h.dataSize, where);
  return h;
}

std::string encodeSafetensorsHeader(
    const std::vector<TensorEntry>& tensors,
    const std::map<std::string, std::string>& metadata) {
  json root = json::object();
  for (const TensorEntry& e : tensors) {
    MOE_ASSERT(!root.contains(e.name), "duplicate tensor ", e.name);
    root[e.name] = {{"dtype", dtypeName(e.dtype)},
                    {"shape", e.shape},
                    {"data_offsets", {e.begin, e.end}}};
  }
  if (!metadata.empty()) root[kMetadataKey] = metadata;
  std::string text = root.dump();
  const size_t total = kSizePrefixBytes + text.size();
  text.append((8 - total % 8) % 8, ' ');
  std::string out(kSizePrefixBytes, '\0');
  uint64_t n = text.size();
  for (size_t i = 0; i < kSizePrefixBytes; ++i)
    out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + text;
}

}  // namespace moe::io
