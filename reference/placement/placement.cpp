#include "reference/placement/placement.h"

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <ostream>

#include "common/error.h"

namespace moe::ref {

namespace {

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

// Splits at top-level commas (commas inside parentheses stay).
std::vector<std::string> splitTopLevel(const std::string& s) {
  std::vector<std::string> parts;
  int depth = 0;
  std::string cur;
  for (char c : s) {
    if (c == '(') ++depth;
    if (c == ')') --depth;
    if (c == ',' && depth == 0) {
      parts.push_back(trim(cur));
      cur.clear();
    } else {
      cur += c;
    }
  }
  parts.push_back(trim(cur));
  return parts;
}

[[noreturn]] void failParse(const std::string& text, const std::string& why) {
  moe::fail("placement '", text, "': ", why,
            " (expected Replicate(), Shard(d), StridedShard(d, s), Partial(sum|avg))");
}

int64_t parseInt(const std::string& text, const std::string& token) {
  std::string t = trim(token);
  if (t.empty()) failParse(text, "missing integer");
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(t.c_str(), &end, 10);
  if (errno != 0 || end == t.c_str() || *end != '\0')
    failParse(text, moe::str("'", t, "' is not an integer"));
  return static_cast<int64_t>(v);
}

}  // namespace

Placement Placement::replicate() { return Placement{}; }

Placement Placement::shard(int64_t dim) {
  Placement p;
  p.kind = PlacementKind::kShard;
  p.dim = dim;
  return p;
}

Placement Placement::stridedShard(int64_t dim, int64_t splitFactor) {
  if (splitFactor < 1)
    moe::fail("placement StridedShard(", dim, ", ", splitFactor, "): split factor must be >= 1");
  Placement p;
  p.kind = PlacementKind::kStridedShard;
  p.dim = dim;
  p.splitFactor = splitFactor;
  return p;
}

Placement Placement::partial(comm::ReduceOp op) {
  if (op != comm::ReduceOp::kSum && op != comm::ReduceOp::kAvg)
    moe::fail("placement Partial(", comm::reduceOpName(op), "): only sum and avg are supported");
  Placement p;
  p.kind = PlacementKind::kPartial;
  p.reduceOp = op;
  return p;
}

Placement Placement::parse(const std::string& textIn) {
  const std::string text = trim(textIn);
  size_t open = text.find('(');
  if (open == std::string::npos || text.back() != ')')
    failParse(textIn, "no argument list");
  const std::string head = trim(text.substr(0, open));
  const std::string inner = text.substr(open + 1, text.size() - open - 2);
  if (inner.find_first_of("()") != std::string::npos) failParse(textIn, "nested parentheses");
  std::vector<std::string> args = splitTopLevel(inner);
  if (args.size() == 1 && args[0].empty()) args.clear();

  if (head == "Replicate") {
    if (!args.empty()) failParse(textIn, "Replicate takes no arguments");
    return replicate();
  }
  if (head == "Shard") {
    if (args.size() != 1) failParse(textIn, "Shard takes one dim");
    return shard(parseInt(textIn, args[0]));
  }
  if (head == "StridedShard") {
    if (args.size() != 2) failParse(textIn, "StridedShard takes a dim and a split factor");
    int64_t s = parseInt(textIn, args[1]);
    if (s < 1) failParse(textIn, moe::str("split factor ", s, " must be >= 1"));
    return stridedShard(parseInt(textIn, args[0]), s);
  }
  if (head == "Partial") {
    if (args.empty() || args[0] == "sum") {
      if (args.size() > 1) failParse(textIn, "Partial takes one reduce op");
      return partial(comm::ReduceOp::kSum);
    }
    if (args.size() == 1 && args[0] == "avg") return partial(comm::ReduceOp::kAvg);
    failParse(textIn, "Partial takes sum or avg");
  }
  failParse(textIn, moe::str("unknown placement '", head, "'"));
}

std::string Placement::toString() const {
  switch (kind) {
    case PlacementKind::kReplicate: return "Replicate()";
    case PlacementKind::kShard: return moe::str("Shard(", dim, ")");
    case PlacementKind::kStridedShard:
      return moe::str("StridedShard(", dim, ", ", splitFactor, ")");
    case PlacementKind::kPartial:
      return moe::str("Partial(", reduceOp == comm::ReduceOp::kAvg ? "avg" : "sum", ")");
  }
  return "?";
}

Placement Placement::normalized(int64_t ndim) const {
  if (!isSharded()) return *this;
  int64_t d = dim < 0 ? dim + ndim : dim;
  if (d < 0 || d >= ndim)
    moe::fail("placement ", toString(), ": dim ", dim, " is out of range for a tensor with ",
              ndim, " dims");
  Placement p = *this;
  p.dim = d;
  return p;
}

bool operator==(const Placement& a, const Placement& b) {
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case PlacementKind::kReplicate: return true;
    case PlacementKind::kShard: return a.dim == b.dim;
    case PlacementKind::kStridedShard: return a.dim == b.dim && a.splitFactor == b.splitFactor;
    case PlacementKind::kPartial: return a.reduceOp == b.reduceOp;
  }
  return false;
}

std::ostream& operator<<(std::ostream& os, const Placement& p) { return os << p.toString(); }

std::string toString(const std::vector<Placement>& placements) {
  std::string s = "[";
  for (size_t i = 0; i < placements.size(); ++i) {
    if (i) s += ", ";
    s += placements[i].toString();
  }
  return s + "]";
}

std::vector<Placement> parsePlacements(const std::string& textIn) {
  std::string text = trim(textIn);
  if (!text.empty() && text.front() == '[') {
    if (text.back() != ']') moe::fail("placements '", textIn, "': missing ']'");
    text = trim(text.substr(1, text.size() - 2));
  }
  std::vector<Placement> out;
  if (text.empty()) return out;
  for (const std::string& item : splitTopLevel(text)) out.push_back(Placement::parse(item));
  return out;
}

}  // namespace moe::ref
