#include "harness/comm/collective_check.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace moe::comm {
namespace {

bool lowPrecision(at::ScalarType t) { return t == at::kBFloat16 || t == at::kHalf; }

class Checker {
 public:
  Checker(Communicator& c, const CollectiveCheckOptions& o, CollectiveCheckReport& rep)
      : c_(c), o_(o), rep_(rep), n_(c.size()), me_(c.rank()) {}

  // Builds [rows, cols] with value f(row, col) in `dtype` on the device.
  template <typename F>
  at::Tensor make(int64_t rows, at::ScalarType dtype, F f) const {
    at::Tensor t = at::empty({rows, o_.cols}, at::kDouble);
    auto a = t.accessor<double, 2>();
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t k = 0; k < o_.cols; ++k) a[r][k] = f(r, k);
    return t.to(dtype).to(o_.device);
  }

  void expectEqual(const char* op, at::ScalarType dtype, const at::Tensor& gotIn, const at::Tensor& expIn,
                   const std::string& what) {
    at::Tensor got = gotIn.cpu().to(at::kDouble).reshape({-1});
    at::Tensor exp = expIn.cpu().to(at::kDouble).reshape({-1});
    if (got.numel() != exp.numel()) {
      rep_.failures.push_back(moe::str("rank ", c_.globalRanks()[me_], " ", op, " ", dtype, " on group '", c_.name(),
                                  "' (", what, "): ", got.numel(), " elements, expected ", exp.numel()));
      return;
    }
    auto g = got.accessor<double, 1>();
    auto e = exp.accessor<double, 1>();
    for (int64_t i = 0; i < got.numel(); ++i) {
      if (g[i] != e[i]) {
        rep_.failures.push_back(moe::str("rank ", c_.globalRanks()[me_], " ", op, " ", dtype, " on group '", c_.name(),
                                    "' (", what, "): element ", i, " = ", g[i], ", expected ", e[i]));
        return;
      }
    }
    rep_.passed++;
  }

  void allReduce(at::ScalarType dt) {
    const int64_t rows = 5;
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax, ReduceOp::kMin}) {
      at::Tensor t = make(rows, dt, [&](int64_t r, int64_t k) { return pattern(me_, r * o_.cols + k, dt); });
      c_.allReduce(t, op);
      at::Tensor exp = make(rows, dt, [&](int64_t r, int64_t k) {
        int64_t i = r * o_.cols + k;
        double v = pattern(0, i, dt);
        for (int q = 1; q < n_; ++q) {
          double x = pattern(q, i, dt);
          v = op == ReduceOp::kMax ? std::max(v, x) : op == ReduceOp::kMin ? std::min(v, x) : v + x;
        }
        return v;
      });
      if (op == ReduceOp::kAvg) exp = dt == at::kLong ? exp.div(n_, "trunc") : exp.div(n_);
      expectEqual("all_reduce", dt, t, exp, reduceOpName(op));
    }
  }

  void broadcast(at::ScalarType dt) {
    for (int root = 0; root < n_; ++root) {
      at::Tensor t = make(4, dt, [&](int64_t r, int64_t k) { return pattern(me_, r * o_.cols + k, dt); });
      c_.broadcast(t, root);
      at::Tensor exp = make(4, dt, [&](int64_t r, int64_t k) { return pattern(root, r * o_.cols + k, dt); });
      expectEqual("broadcast", dt, t, exp, moe::str("root ", root));
    }
  }

  void allGather(at::ScalarType dt, const std::vector<int64_t>& rows, const std::string& what) {
    const bool even = what == "even";
    at::Tensor in = make(rows[me_], dt, [&](int64_t r, int64_t k) { return pattern(me_, r * o_.cols + k, dt); });
    int64_t total = std::accumulate(rows.begin(), rows.end(), int64_t{0});
    at::Tensor out = at::full({total, o_.cols}, -1, at::TensorOptions().dtype(dt).device(o_.device));
    c_.allGather(out, in, even ? std::vector<int64_t>{} : rows);
    std::vector<at::Tensor> parts;
    for (int q = 0; q < n_; ++q)
      parts.push_back(make(rows[q], dt, [&](int64_t r, int64_t k) { return pattern(q, r * o_.cols + k, dt); }));
    expectEqual("all_gather", dt, out, at::cat(parts, 0), what);
  }

  void reduceScatter(at::ScalarType dt, const std::vector<int64_t>& rows, ReduceOp op, const std::string& what) {
    const bool even = what == "even";
    int64_t total = std::accumulate(rows.begin(), rows.end(), int64_t{0});
    at::Tensor in = make(total, dt, [&](int64_t r, int64_t k) { return pattern(me_, r * o_.cols + k, dt); });
    at::Tensor out = at::full({rows[me_], o_.cols}, -1, at::TensorOptions().dtype(dt).device(o_.device));
    c_.reduceScatter(out, in, op, even ? std::vector<int64_t>{} : rows);
    int64_t off = std::accumulate(rows.begin(), rows.begin() + me_, int64_t{0});
    at::Tensor exp = make(rows[me_], dt, [&](int64_t r, int64_t k) {
      double v = 0;
      for (int q = 0; q < n_; ++q) v += pattern(q, (off + r) * o_.cols + k, dt);
      return v;
    });
    if (op == ReduceOp::kAvg) exp = exp.div(n_);
    expectEqual("reduce_scatter", dt, out, exp, moe::str(what, " ", reduceOpName(op)));
  }

  // Row k sent from src to dst carries code(src, dst, k): the receiver can
  // tell who sent it and to whom.
  static double code(int src, int dst, int64_t k) { return src * 64 + dst * 16 + (k % 16); }

  void allToAll(at::ScalarType dt, bool even) {
    // Uneven splits with zeros: src sends (src + 2*dst) % 3 rows to dst.
    auto rowsFor = [&](int src, int dst) -> int64_t { return even ? 2 : (src + 2 * dst) % 3; };
    std::vector<int64_t> inSplits, outSplits;
    for (int j = 0; j < n_; ++j) {
      inSplits.push_back(rowsFor(me_, j));
      outSplits.push_back(rowsFor(j, me_));
    }
    auto build = [&](bool incoming) {
      std::vector<at::Tensor> parts;
      for (int j = 0; j < n_; ++j) {
        int src = incoming ? j : me_, dst = incoming ? me_ : j;
        parts.push_back(make(rowsFor(src, dst), dt, [&](int64_t r, int64_t k) { return code(src, dst, r * o_.cols + k); }));
      }
      return at::cat(parts, 0);
    };
    at::Tensor in = build(false);
    at::Tensor out = at::full({std::accumulate(outSplits.begin(), outSplits.end(), int64_t{0}), o_.cols}, -1,
                              at::TensorOptions().dtype(dt).device(o_.device));
    c_.allToAllSingle(out, in, even ? std::vector<int64_t>{} : outSplits, even ? std::vector<int64_t>{} : inSplits);
    expectEqual("all_to_all", dt, out, build(true), even ? "even" : "uneven with zero splits");
  }

  void sendRecv(at::ScalarType dt) {
    if (n_ < 2) return;
    int next = (me_ + 1) % n_, prev = (me_ + n_ - 1) % n_;
    at::Tensor mine = make(3, dt, [&](int64_t r, int64_t k) { return pattern(me_, r * o_.cols + k, dt); });
    at::Tensor got = at::full({3, o_.cols}, -1, at::TensorOptions().dtype(dt).device(o_.device));
    // Even ranks send first, odd ranks receive first. With an odd ring the
    // last (even) rank also sends first; Gloo sends are eager, so it works.
    if (me_ % 2 == 0) {
      c_.send(mine, next);
      c_.recv(got, prev);
    } else {
      c_.recv(got, prev);
      c_.send(mine, next);
    }
    at::Tensor exp = make(3, dt, [&](int64_t r, int64_t k) { return pattern(prev, r * o_.cols + k, dt); });
    expectEqual("send/recv", dt, got, exp, moe::str("from rank ", prev));
  }

  void run() {
    c_.barrier();
    rep_.passed++;
    for (at::ScalarType dt : o_.dtypes) {
      allReduce(dt);
      broadcast(dt);
      allGather(dt, std::vector<int64_t>(n_, 2), "even");
      for (int64_t total : {int64_t{7}, int64_t{5}, int64_t{1}})
        allGather(dt, chunkRows(total, n_), moe::str("uneven ", total, " rows"));
      for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg}) {
        reduceScatter(dt, std::vector<int64_t>(n_, 2), op, "even");
        reduceScatter(dt, chunkRows(5, n_), op, "uneven 5 rows");
      }
      allToAll(dt, true);
      allToAll(dt, false);
      sendRecv(dt);
    }
    for (at::ScalarType dt : o_.reduceOnlyDtypes) {
      allReduce(dt);
      broadcast(dt);
    }
    c_.barrier();
    rep_.passed++;
  }

 private:
  Communicator& c_;
  const CollectiveCheckOptions& o_;
  CollectiveCheckReport& rep_;
  int n_, me_;
};

}  // namespace

double pattern(int rank, int64_t index, at::ScalarType dtype) {
  // Low-precision dtypes: rank * 16 + index % 16 keeps every value and every
  // sum over <= 4 ranks below 256, i.e. exact in bfloat16's 8-bit mantissa.
  if (lowPrecision(dtype)) return rank * 16 + (index % 16);
  return rank * 1000 + index;
}

std::vector<int64_t> chunkRows(int64_t total, int n) {
  // torch.chunk: pieces of ceil(total / n); the last may be smaller and
  // trailing ones empty.
  int64_t piece = (total + n - 1) / n;
  std::vector<int64_t> rows;
  int64_t left = total;
  for (int i = 0; i < n; ++i) {
    int64_t r = std::min(piece, left);
    rows.push_back(r);
    left -= r;
  }
  return rows;
}

CollectiveCheckReport checkCollectives(Communicator& comm, const CollectiveCheckOptions& opts) {
  CollectiveCheckReport rep;
  CollectiveCheckOptions o = opts;
  if (comm.size() > 4) {
    // bfloat16 patterns are exact only for groups of <= 4.
    auto drop = [](std::vector<at::ScalarType>& v) {
      v.erase(std::remove_if(v.begin(), v.end(), [](at::ScalarType t) { return lowPrecision(t); }), v.end());
    };
    drop(o.dtypes);
    drop(o.reduceOnlyDtypes);
  }
  Checker(comm, o, rep).run();
  return rep;
}

}  // namespace moe::comm
