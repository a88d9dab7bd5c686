// CPU back end: all-pairs kernels, threads over bodies (at::parallel_for, i.e.
// torch's OpenMP pool, so torch.set_num_threads applies), SIMD over partners.
// Positions and gradients are read in structure-of-arrays form (B, D, N) so that
// the inner loop over j is unit-stride and vectorises.
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include "backend.h"
#include "cpu/aarseth_kernels.h"
#include "cpu/encounter_kernels.h"
#include "cpu/fewbody_kernels.h"
#include "cpu/fewbody_run.h"
#include "cpu/history_kernels.h"
#include "cpu/lane_net.h"
#include "cpu/pair_kernel.h"
#include "cpu/rsqrt_kernels.h"
#include "gravity.h"
#include "pair_stats.h"

namespace aits {
namespace {

// The native network of check_net's layers (ops.cpp): [weight (K, out, in), bias
// (K, out)] of each, float64, contiguous; they must outlive the Net.
lane_net::Net native_net(const std::vector<at::Tensor>& layers, NetActivation activation,
                         double scale) {
  lane_net::Net net;
  net.members = layers[0].size(0);
  net.activation = activation;
  net.scale = scale;
  for (size_t k = 0; k + 1 < layers.size(); k += 2) {
    const at::Tensor& w = layers[k];
    net.layers.push_back({w.size(2), w.size(1), w.data_ptr<double>(),
                          layers[k + 1].data_ptr<double>()});
    net.width = std::max(net.width, w.size(1));
  }
  return net;
}

// Enough pair interactions per task to amortise scheduling.
int64_t grain_for(int64_t n) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(n, 1)); }

// (B, N, D) -> (B, D, N) contiguous.
at::Tensor to_soa(const at::Tensor& t) { return t.transpose(1, 2).contiguous(); }

// The coordinate rows of one system in (D, N) layout: unit-stride in j, so the
// inner loops vectorise with plain vector loads. In 2-D, z reads as 0.
template <typename T, int D>
struct Columns {
  const T* __restrict x;
  const T* __restrict y;
  const T* __restrict z;
  Columns(const T* base, int64_t N) : x(base), y(base + N), z(D == 3 ? base + 2 * N : nullptr) {}
  AITS_HD Vec3<T> at(int64_t j) const { return {x[j], y[j], D == 3 ? z[j] : T(0)}; }
};

template <typename T>
AITS_HD Vec3<T> minus(const Vec3<T>& a, const Vec3<T>& b) {
  return {a.x - b.x, a.y - b.y, a.z - b.z};
}

// K running reductions over partners j in [j0, j1), kept in W independent
// lanes so the compiler vectorises the loop without reassociating floating-point
// sums (no -ffast-math); the lanes are combined in a fixed order at the end, so
// the result is the same on every run and every thread count.
template <typename T, int K>
struct Sums {
  T v[K];
};

// Component-wise merge of plain sums.
struct Add {
  template <typename T>
  AITS_HD void operator()(int, T& acc, T t) const { acc += t; }
};

template <typename T, int K, typename Body, typename Merge = Add>
AITS_HD Sums<T, K> reduce_partners(int64_t j0, int64_t j1, const Body& body,
                                   const Sums<T, K>& init = {}, const Merge& merge = {}) {
  constexpr int W = 64 / sizeof(T);  // one AVX-512 register, two AVX2 ones
  T lanes[K][W];
  for (int k = 0; k < K; ++k) {
    for (int l = 0; l < W; ++l) lanes[k][l] = init.v[k];
  }
  int64_t j = j0;
  for (; j + W <= j1; j += W) {
    for (int l = 0; l < W; ++l) {
      const Sums<T, K> t = body(j + l);
      for (int k = 0; k < K; ++k) merge(k, lanes[k][l], t.v[k]);
    }
  }
  Sums<T, K> total = init;
  for (; j < j1; ++j) {
    const Sums<T, K> t = body(j);
    for (int k = 0; k < K; ++k) merge(k, total.v[k], t.v[k]);
  }
  for (int k = 0; k < K; ++k) {
    for (int l = 0; l < W; ++l) merge(k, total.v[k], lanes[k][l]);
  }
  return total;
}

template <typename T, int K, typename Body>
AITS_HD Sums<T, K> sum_partners(int64_t j0, int64_t j1, const Body& body) {
  return reduce_partners<T, K>(j0, j1, body);
}

// The same reductions over every partner except j == skip. The self term is
// skipped by index, never by a test on the distance, so coincident distinct
// bodies stay visible as non-finite results.
template <typename T, int K, typename Body, typename Merge = Add>
AITS_HD Sums<T, K> reduce_others(int64_t skip, int64_t n, const Body& body,
                                 const Sums<T, K>& init = {}, const Merge& merge = {}) {
  Sums<T, K> lo = reduce_partners<T, K>(0, skip, body, init, merge);
  const Sums<T, K> hi = reduce_partners<T, K>(skip + 1, n, body, init, merge);
  for (int k = 0; k < K; ++k) merge(k, lo.v[k], hi.v[k]);
  return lo;
}

template <typename T, int K, typename Body>
AITS_HD Sums<T, K> sum_others(int64_t skip, int64_t n, const Body& body) {
  return reduce_others<T, K>(skip, n, body);
}

template <typename T, int D, bool kAcc, bool kPhi>
void forward_kernel(const T* x, const T* mass, int64_t B, int64_t N, T eps2, T G, T* acc, T* phi) {
  at::parallel_for(0, B * N, grain_for(N), [&](int64_t begin, int64_t end) {
    for (int64_t idx = begin; idx < end; ++idx) {
      const int64_t b = idx / N, i = idx % N;
      const Columns<T, D> xb(x + b * D * N, N);
      const T* __restrict mb = mass + b * N;
      const Vec3<T> xi = xb.at(i);
      // sums: a_x, a_y, (a_z), (phi)
      constexpr int K = (kAcc ? D : 0) + (kPhi ? 1 : 0);
      const Sums<T, K> s = sum_others<T, K>(i, N, [&](int64_t j) {
        const Vec3<T> d = minus(xb.at(j), xi);
        T inv, pot;
        const T w = pull_scale(eps2 + dot(d, d), mb[j], inv, pot);
        Sums<T, K> t;
        if constexpr (kAcc) {
          t.v[0] = w * (d.x * inv);
          t.v[1] = w * (d.y * inv);
          if constexpr (D == 3) t.v[2] = w * (d.z * inv);
        }
        if constexpr (kPhi) t.v[K - 1] = pot;
        return t;
      });
      if constexpr (kAcc) {
        for (int c = 0; c < D; ++c) acc[idx * D + c] = G * s.v[c];
      }
      if constexpr (kPhi) phi[idx] = -G * s.v[K - 1];
    }
  });
}

// Merge of the fused kernel's rows: D acceleration sums, then the row statistics
// of pair_stats.h (min s^2, sum s, max s^2 and max of q = (m_i + m_j) / s^3: the
// free-fall time is sqrt(1 / (G q)), no extra division or root per pair). D = 0:
// the statistics alone (pair_statistics_kernel keeps s instead of s^2: the same merge).
template <int D>
struct AccStatsMerge {
  template <typename T>
  AITS_HD void operator()(int k, T& acc, T t) const {
    if (k < D) {
      acc += t;
    } else {
      merge_row_stat(k - D, acc, t);
    }
  }
};

// One body's row statistics over its partners j != i (min s^2, sum of s, max s^2,
// max q), one pair at a time with a correctly rounded root, as pair_statistics
// takes them: for the rows of rsqrt_kernels::forward's statistics with s^2 = 0
// (softening 0, rare), where its s^2 / s is 0 / 0.
template <typename T, int D>
void exact_row_statistics(const T* x, const T* mass, int64_t N, T eps2, int64_t idx, T* row) {
  const int64_t b = idx / N, i = idx % N;
  const Columns<T, D> xb(x + b * D * N, N);
  const T* mb = mass + b * N;
  const AccStatsMerge<0> merge;  // k = 0: min, 1: sum, 2, 3: max
  row[0] = std::numeric_limits<T>::infinity(), row[1] = row[2] = row[3] = T(0);
  for (int64_t j = 0; j < N; ++j) {
    if (j == i) continue;
    const Vec3<T> d = minus(xb.at(j), xb.at(i));
    const T s2 = distinct_s2(eps2 + dot(d, d), d), s = std::sqrt(s2);
    const T t[4] = {s2, s, s2, freefall_weight<T>(mb[i] + mb[j], T(1) / s)};
    for (int k = 0; k < 4; ++k) merge(k, row[k], t[k]);
  }
}

// stats (B, 4) from each body's row statistics over its partners j != i (min s^2,
// sum of s, max s^2, max q: A values at rows[idx * stride + 0..3]), the rows of a
// system combined in row order.
template <typename T, typename A>
void combine_row_statistics(const A* rows, int64_t stride, int64_t B, int64_t N, A G, T* stats) {
  const AccStatsMerge<0> merge;  // k = 0: min, 1: sum, 2, 3: max
  for (int64_t b = 0; b < B; ++b) {
    A total[4] = {std::numeric_limits<A>::infinity(), A(0), A(0), A(0)};
    for (int64_t i = 0; i < N; ++i) {
      for (int k = 0; k < 4; ++k) merge(k, total[k], rows[(b * N + i) * stride + k]);
    }
    T* o = stats + b * 4;
    o[0] = N > 1 ? static_cast<T>(std::sqrt(total[0])) : T(0);
    o[1] = N > 1 ? static_cast<T>(total[1] / (A(N) * A(N - 1))) : T(0);
    o[2] = static_cast<T>(std::sqrt(total[2]));
    o[3] = freefall_time<T>(G, total[3], total[0]);
  }
}

// acc (B, N, D) as forward_kernel, and stats (B, 4) of the same positions as
// pair_statistics_kernel, in one pass over all pairs: s = s^2 / s and the
// free-fall weight come from the force's own 1/s. The path of float32 and of the
// divide kernel; float64 under the rsqrt kernel takes rsqrt_kernels::forward with
// kStats (this one measured 2.3x the rsqrt step at N = 1024, docs/benchmarks.md).
template <typename T, int D>
void forward_statistics_kernel(const T* x, const T* mass, int64_t B, int64_t N, T eps2, T G,
                               T* acc, T* stats) {
  using A = StatAcc<T>;
  constexpr int K = D + 4;
  constexpr A inf = std::numeric_limits<A>::infinity();
  Sums<A, K> init{};
  init.v[D] = inf;
  const AccStatsMerge<D> merge;
  std::vector<Sums<A, K>> rows(static_cast<size_t>(B * N));
  at::parallel_for(0, B * N, grain_for(N), [&](int64_t begin, int64_t end) {
    for (int64_t idx = begin; idx < end; ++idx) {
      const int64_t b = idx / N, i = idx % N;
      const Columns<T, D> xb(x + b * D * N, N);
      const T* __restrict mb = mass + b * N;
      const Vec3<T> xi = xb.at(i);
      const T mi = mb[i];
      const Sums<A, K> s = reduce_others<A, K>(
          i, N,
          [&](int64_t j) {
            const Vec3<T> d = minus(xb.at(j), xi);
            const T s2 = distinct_s2(eps2 + dot(d, d), d);
            T inv, pot;
            const T w = pull_scale(s2, mb[j], inv, pot);
            Sums<A, K> t;
            t.v[0] = w * (d.x * inv);
            t.v[1] = w * (d.y * inv);
            if constexpr (D == 3) t.v[2] = w * (d.z * inv);
            t.v[D] = s2;
            t.v[D + 1] = s2 > T(0) ? s2 * inv : T(0);  // coincident: s = 0, not 0 inf
            t.v[D + 2] = s2;
            t.v[D + 3] = freefall_weight<A>(mi + mb[j], inv);
            return t;
          },
          init, merge);
      for (int c = 0; c < D; ++c) acc[idx * D + c] = static_cast<T>(G * s.v[c]);
      rows[idx] = s;
    }
  });
  combine_row_statistics<T>(&rows[0].v[D], K, B, N, A(G), stats);
}

template <typename T, int D>
void backward_kernel(const T* x, const T* mass, const T* g, int64_t B, int64_t N, T eps2, T G,
                     T* grad_pos, T* grad_mass) {
  at::parallel_for(0, B * N, grain_for(N), [&](int64_t begin, int64_t end) {
    for (int64_t idx = begin; idx < end; ++idx) {
      const int64_t b = idx / N, k = idx % N;
      const Columns<T, D> xb(x + b * D * N, N);
      const Columns<T, D> gb(g + b * D * N, N);
      const T* __restrict mb = mass + b * N;
      const T mk = mb[k];
      const Vec3<T> xk = xb.at(k), gk = gb.at(k);
      // sums: dL/dx_k (D components), dL/dm_k
      const Sums<T, D + 1> s = sum_others<T, D + 1>(k, N, [&](int64_t j) {
        const Vec3<T> d = minus(xb.at(j), xk);
        Sums<T, D + 1> t;
        t.v[D] = 0;
        const Vec3<T> gx = pull_backward_scaled(d, eps2 + dot(d, d), mk, mb[j], gk, gb.at(j), t.v[D]);
        t.v[0] = gx.x;
        t.v[1] = gx.y;
        if constexpr (D == 3) t.v[2] = gx.z;
        return t;
      });
      for (int c = 0; c < D; ++c) grad_pos[idx * D + c] = G * s.v[c];
      grad_mass[idx] = G * s.v[D];
    }
  });
}

// Calls row(b, i) for every system b and body i, two rows per task (i and
// N-1-i): rows over partners j > i then cost N-1 pairs per task, balanced.
template <typename Row>
void for_each_upper_row(int64_t B, int64_t N, const Row& row) {
  const int64_t half = (N + 1) / 2;
  at::parallel_for(0, B * half, grain_for(N), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t b = t / half, r = t % half;
      row(b, r);
      if (N - 1 - r != r) row(b, N - 1 - r);
    }
  });
}

// U = -G sum_i m_i sum_{j>i} m_j / s_ij. Row i is summed by one thread and the
// rows are added in a fixed order, so the result does not depend on threading.
template <typename T, int D>
void potential_kernel(const T* x, const T* mass, int64_t B, int64_t N, T eps2, T G, T* energy) {
  std::vector<T> rows(static_cast<size_t>(B * N));
  for_each_upper_row(B, N, [&](int64_t b, int64_t i) {
    const Columns<T, D> xb(x + b * D * N, N);
    const T* __restrict mb = mass + b * N;
    const Vec3<T> xi = xb.at(i);
    const Sums<T, 1> p = sum_partners<T, 1>(i + 1, N, [&](int64_t j) {
      const Vec3<T> d = minus(xb.at(j), xi);
      return Sums<T, 1>{{mb[j] * inverse_distance(eps2 + dot(d, d))}};
    });
    rows[b * N + i] = mb[i] * p.v[0];
  });
  for (int64_t b = 0; b < B; ++b) {
    T u = 0;
    for (int64_t i = 0; i < N; ++i) u += rows[b * N + i];
    energy[b] = -G * u;
  }
}

// Per system: min, mean and max of the softened distances s_ij over pairs
// i != j, and the minimum free-fall time sqrt(s_ij^3 / (G (m_i + m_j))) (when
// kFreefall; NaN otherwise). out: (B, 4). Pairs i < j only: half the work.
// The free-fall time goes through q = (m_i + m_j) / s^3, as in the force, so
// it stays finite in float32 wherever the forces do.
template <typename T, int D, bool kFreefall>
void pair_statistics_kernel(const T* x, const T* mass, int64_t B, int64_t N, T eps2, T G,
                            T* out) {
  using A = StatAcc<T>;
  constexpr A inf = std::numeric_limits<A>::infinity();
  const Sums<A, 4> init{{inf, A(0), A(0), A(0)}};
  std::vector<Sums<A, 4>> rows(static_cast<size_t>(B * N), init);
  for_each_upper_row(B, N, [&](int64_t b, int64_t i) {
    const Columns<T, D> xb(x + b * D * N, N);
    const T* __restrict mb = mass + b * N;
    const Vec3<T> xi = xb.at(i);
    const T mi = mb[i];
    rows[b * N + i] = reduce_partners<A, 4>(
        i + 1, N,
        [&](int64_t j) {
          const Vec3<T> d = minus(xb.at(j), xi);
          const T s = std::sqrt(distinct_s2(eps2 + dot(d, d), d));
          A q = A(0);
          if constexpr (kFreefall) q = freefall_weight<A>(mi + mb[j], T(1) / s);
          return Sums<A, 4>{{A(s), A(s), A(s), q}};
        },
        init, AccStatsMerge<0>{});
  });
  const AccStatsMerge<0> merge;
  const A pairs = A(N) * A(N - 1) / A(2);
  for (int64_t b = 0; b < B; ++b) {
    Sums<A, 4> total = init;
    for (int64_t i = 0; i < N; ++i) {
      for (int k = 0; k < 4; ++k) merge(k, total.v[k], rows[b * N + i].v[k]);
    }
    T* o = out + b * 4;
    o[0] = N > 1 ? static_cast<T>(total.v[0]) : T(0);
    o[1] = N > 1 ? static_cast<T>(total.v[1] / pairs) : T(0);
    o[2] = static_cast<T>(total.v[2]);
    o[3] = kFreefall ? freefall_time<T>(A(G), total.v[3], total.v[0]) : std::numeric_limits<T>::quiet_NaN();
  }
}

template <typename Fn>
void dispatch_dim(int64_t D, Fn&& fn) {
  if (D == 2) {
    fn(std::integral_constant<int, 2>{});
  } else {
    fn(std::integral_constant<int, 3>{});
  }
}

// What every kernel call needs: positions in (B, D, N) layout, masses (B, N),
// the sizes, eps^2 and G, in the system's scalar type.
template <typename T>
struct SystemArgs {
  using scalar = T;
  const T* x;
  const T* mass;
  int64_t B, N;
  T eps2, G;
};

// Calls fn(SystemArgs<scalar_t>, std::integral_constant<int, D>) for pos's
// dtype and dimension: the one place where the CPU kernels are dispatched.
template <typename Fn>
void with_system(const at::Tensor& pos, const at::Tensor& mass, double softening, double G,
                 Fn&& fn) {
  const at::Tensor x = to_soa(pos);
  AT_DISPATCH_FLOATING_TYPES(pos.scalar_type(), "aits_cpu_kernel", [&] {
    const SystemArgs<scalar_t> s{x.data_ptr<scalar_t>(), mass.data_ptr<scalar_t>(),
                                 pos.size(0),           pos.size(1),
                                 static_cast<scalar_t>(softening * softening),
                                 static_cast<scalar_t>(G)};
    dispatch_dim(pos.size(2), [&](auto dim) { fn(s, dim); });
  });
}

// Calls fn(inverse) with the few-body kernels' inverse distance for the
// selected pair kernel (lanes.h).
template <typename Fn>
void with_inverse(Fn&& fn) {
  if (current_pair_kernel() == PairKernel::kRsqrt) {
    fn(lanes::RsqrtInverse{});
  } else {
    fn(lanes::DivideInverse{});
  }
}

// Whether the few-body kernels take this system: N <= kMaxBodies (8 float64,
// 16 float32; fewbody_kernels.h), by dtype; never chosen by B, so one system
// and a batch of it give the same numbers.
bool few_body(const at::Tensor& pos) {
  const int64_t N = pos.size(1);
  return pos.scalar_type() == at::kFloat ? N <= fewbody::kMaxBodies<float>
                                         : N <= fewbody::kMaxBodies<double>;
}

// with_system for the few-body kernels: the (B, N, D) tensors as they are.
template <typename Fn>
void with_system_aos(const at::Tensor& pos, const at::Tensor& mass, double softening, double G,
                     Fn&& fn) {
  const at::Tensor x = pos.contiguous();
  AT_DISPATCH_FLOATING_TYPES(pos.scalar_type(), "aits_cpu_fewbody", [&] {
    const SystemArgs<scalar_t> s{x.data_ptr<scalar_t>(), mass.data_ptr<scalar_t>(),
                                 pos.size(0),           pos.size(1),
                                 static_cast<scalar_t>(softening * softening),
                                 static_cast<scalar_t>(G)};
    dispatch_dim(pos.size(2), [&](auto dim) { fn(s, dim); });
  });
}

template <typename Args>
using Scalar = typename std::decay_t<Args>::scalar;

class CpuBackend final : public GravityBackend {
 public:
  void pair_forward(const at::Tensor& pos, const at::Tensor& mass, double softening, double G,
                    at::Tensor& acc, at::Tensor& phi) const override {
    if (few_body(pos)) {
      with_system_aos(pos, mass, softening, G, [&](const auto& s, auto dim) {
        using T = Scalar<decltype(s)>;
        constexpr int D = decltype(dim)::value;
        T* a = acc.defined() ? acc.data_ptr<T>() : nullptr;
        T* p = phi.defined() ? phi.data_ptr<T>() : nullptr;
        with_inverse([&](auto inv) {
          if (a && p) {
            fewbody::forward<T, D, true, true>(s.x, s.mass, s.B, s.N, s.eps2, s.G, a, p, inv);
          } else if (a) {
            fewbody::forward<T, D, true, false>(s.x, s.mass, s.B, s.N, s.eps2, s.G, a, p, inv);
          } else if (p) {
            fewbody::forward<T, D, false, true>(s.x, s.mass, s.B, s.N, s.eps2, s.G, a, p, inv);
          }
        });
      });
      return;
    }
    with_system(pos, mass, softening, G, [&](const auto& s, auto dim) {
      using T = Scalar<decltype(s)>;
      constexpr int D = decltype(dim)::value;
      T* a = acc.defined() ? acc.data_ptr<T>() : nullptr;
      T* p = phi.defined() ? phi.data_ptr<T>() : nullptr;
      if (current_pair_kernel() == PairKernel::kRsqrt) {
        if (a && p) {
          rsqrt_kernels::forward<T, D, true, true>(s.x, s.mass, s.B, s.N, s.eps2, s.G, a, p);
        } else if (a) {
          rsqrt_kernels::forward<T, D, true, false>(s.x, s.mass, s.B, s.N, s.eps2, s.G, a, p);
        } else if (p) {
          rsqrt_kernels::forward<T, D, false, true>(s.x, s.mass, s.B, s.N, s.eps2, s.G, a, p);
        }
      } else if (a && p) {
        forward_kernel<T, D, true, true>(s.x, s.mass, s.B, s.N, s.eps2, s.G, a, p);
      } else if (a) {
        forward_kernel<T, D, true, false>(s.x, s.mass, s.B, s.N, s.eps2, s.G, a, p);
      } else if (p) {
        forward_kernel<T, D, false, true>(s.x, s.mass, s.B, s.N, s.eps2, s.G, a, p);
      }
    });
  }

  void pair_forward_with_statistics(const at::Tensor& pos, const at::Tensor& mass,
                                    double softening, double G, at::Tensor& acc,
                                    at::Tensor& stats) const override {
    if (few_body(pos)) {
      with_system_aos(pos, mass, softening, G, [&](const auto& s, auto dim) {
        using T = Scalar<decltype(s)>;
        with_inverse([&](auto inv) {
          fewbody::forward_statistics<T, decltype(dim)::value>(
              s.x, s.mass, s.B, s.N, s.eps2, s.G, acc.data_ptr<T>(), stats.data_ptr<T>(), inv);
        });
      });
      return;
    }
    with_system(pos, mass, softening, G, [&](const auto& s, auto dim) {
      using T = Scalar<decltype(s)>;
      constexpr int D = decltype(dim)::value;
      if constexpr (std::is_same_v<T, double>) {
        if (current_pair_kernel() == PairKernel::kRsqrt) {
          // the rsqrt forward with each row's statistics (float64 only)
          std::vector<double> rows(static_cast<size_t>(s.B * s.N * rsqrt_kernels::kRowStats));
          rsqrt_kernels::forward<T, D, true, false, true>(s.x, s.mass, s.B, s.N, s.eps2, s.G,
                                                          acc.data_ptr<T>(), nullptr, rows.data());
          for (int64_t idx = 0; idx < s.B * s.N; ++idx) {
            T* row = rows.data() + idx * rsqrt_kernels::kRowStats;
            if (row[rsqrt_kernels::kMinS2] == T(0)) {
              exact_row_statistics<T, D>(s.x, s.mass, s.N, s.eps2, idx, row);
            }
          }
          combine_row_statistics<T>(rows.data(), rsqrt_kernels::kRowStats, s.B, s.N, s.G,
                                    stats.data_ptr<T>());
          return;
        }
      }
      forward_statistics_kernel<T, D>(s.x, s.mass, s.B, s.N, s.eps2, s.G, acc.data_ptr<T>(),
                                      stats.data_ptr<T>());
    });
  }

  bool kdk_step_with_statistics(const at::Tensor& pos, const at::Tensor& vel,
                                const at::Tensor& mass, const at::Tensor& dt,
                                const at::Tensor& acc0, double softening, double G,
                                at::Tensor& pos1, at::Tensor& vel1, at::Tensor& acc1,
                                at::Tensor& stats) const override {
    if (!few_body(pos)) return false;
    with_system_aos(pos, mass, softening, G, [&](const auto& s, auto dim) {
      using T = Scalar<decltype(s)>;
      with_inverse([&](auto inv) {
        fewbody::kdk_statistics<T, decltype(dim)::value>(
            s.x, vel.data_ptr<T>(), s.mass, dt.data_ptr<T>(), acc0.data_ptr<T>(), s.B, s.N,
            s.eps2, s.G, pos1.data_ptr<T>(), vel1.data_ptr<T>(), acc1.data_ptr<T>(),
            stats.data_ptr<T>(), inv);
      });
    });
    return true;
  }

  void pair_backward(const at::Tensor& pos, const at::Tensor& mass, const at::Tensor& grad_acc,
                     double softening, double G, at::Tensor& grad_pos,
                     at::Tensor& grad_mass) const override {
    const at::Tensor g = to_soa(grad_acc);
    with_system(pos, mass, softening, G, [&](const auto& s, auto dim) {
      using T = Scalar<decltype(s)>;
      constexpr int D = decltype(dim)::value;
      auto run = current_pair_kernel() == PairKernel::kRsqrt ? rsqrt_kernels::backward<T, D>
                                                              : backward_kernel<T, D>;
      run(s.x, s.mass, g.data_ptr<T>(), s.B, s.N, s.eps2,
                                               s.G, grad_pos.data_ptr<T>(),
                                               grad_mass.data_ptr<T>());
    });
  }

  void potential(const at::Tensor& pos, const at::Tensor& mass, double softening, double G,
                 at::Tensor& energy) const override {
    if (few_body(pos)) {
      with_system_aos(pos, mass, softening, G, [&](const auto& s, auto dim) {
        using T = Scalar<decltype(s)>;
        with_inverse([&](auto inv) {
          fewbody::potential<T, decltype(dim)::value>(s.x, s.mass, s.B, s.N, s.eps2, s.G,
                                                      energy.data_ptr<T>(), inv);
        });
      });
      return;
    }
    with_system(pos, mass, softening, G, [&](const auto& s, auto dim) {
      using T = Scalar<decltype(s)>;
      potential_kernel<T, decltype(dim)::value>(s.x, s.mass, s.B, s.N, s.eps2, s.G,
                                                energy.data_ptr<T>());
    });
  }

  // All-pairs: one kernel for both pair-kernel settings, simd::rsqrt per pair
  // (the estimate of simd.h, or its portable form without AVX). Few-body: the
  // selected pair kernel's inverse distance.
  void aarseth_derivatives(const at::Tensor& pos, const at::Tensor& vel, const at::Tensor& mass,
                           double softening, double G, at::Tensor& acc, at::Tensor& jerk,
                           at::Tensor& snap, at::Tensor& crackle) const override {
    if (few_body(pos)) {
      const at::Tensor v = vel.contiguous();
      with_system_aos(pos, mass, softening, G, [&](const auto& s, auto dim) {
        using T = Scalar<decltype(s)>;
        with_inverse([&](auto inv) {
          fewbody::derivatives<T, decltype(dim)::value>(
              s.x, v.data_ptr<T>(), s.mass, s.B, s.N, s.eps2, s.G, acc.data_ptr<T>(),
              jerk.data_ptr<T>(), snap.data_ptr<T>(), crackle.data_ptr<T>(), inv);
        });
      });
      return;
    }
    const at::Tensor v = to_soa(vel);
    with_system(pos, mass, softening, G, [&](const auto& s, auto dim) {
      using T = Scalar<decltype(s)>;
      aarseth_kernels::derivatives<T, decltype(dim)::value>(
          s.x, v.data_ptr<T>(), s.mass, s.B, s.N, s.eps2, s.G, acc.data_ptr<T>(),
          jerk.data_ptr<T>(), snap.data_ptr<T>(), crackle.data_ptr<T>());
    });
  }

  void kdk_run(const KdkRunArgs& run) const override {
    TORCH_CHECK_VALUE(few_body(run.pos), "aits.kdk_run: N = ", run.pos.size(1),
                      " bodies is above the few-body sizes it runs (at most ",
                      fewbody::kMaxBodies<double>, " in float64, ", fewbody::kMaxBodies<float>,
                      " in float32); aits.simulate runs such systems in its Python loop.");
    const lane_net::Net net = run.policy == RunPolicy::kModel
                                  ? native_net(run.net, run.activation, run.net_scale)
                                  : lane_net::Net{};
    const fewbody::RunConfig cfg{run.policy,    run.value, run.max_steps, run.diagnostics,
                                 run.threshold, run.floor, run.fail_above, run.stop_diverged,
                                 &net,          run.clip,      run.smooth,
                                 run.orbit,     run.history,   run.symmetric};
    with_system_aos(run.pos, run.mass, run.softening, run.G, [&](const auto& s, auto dim) {
      using T = Scalar<decltype(s)>;
      const fewbody::RunIO<T> io{s.x,
                                 run.vel.data_ptr<T>(),
                                 s.mass,
                                 run.acc.data_ptr<T>(),
                                 run.time.data_ptr<double>(),
                                 run.t_stop.data_ptr<double>(),
                                 run.pos1.data_ptr<T>(),
                                 run.vel1.data_ptr<T>(),
                                 run.acc1.data_ptr<T>(),
                                 run.time1.data_ptr<double>(),
                                 run.counts.data_ptr<int64_t>(),
                                 run.stats.data_ptr<double>()};
      constexpr int D = decltype(dim)::value;
      with_inverse([&](auto inv) { fewbody::kdk_run<T, D>(io, s.B, s.N, s.eps2, s.G, cfg, inv); });
      // the conserved totals at the start and at the end: row b holds both
      double* totals = run.totals.data_ptr<double>();
      const int64_t stride = 2 * fewbody::kTotals;
      const double eps2 = run.softening * run.softening;
      fewbody::totals<T, D>(s.x, io.v, s.mass, s.B, s.N, eps2, run.G, totals, stride);
      fewbody::totals<T, D>(io.x_out, io.v_out, s.mass, s.B, s.N, eps2, run.G,
                            totals + fewbody::kTotals, stride);
    });
  }

  // Above one row block of pairs (64 bodies) in float64, the derivatives' two
  // passes also take the pair times (encounter_kernels::PairTimesObserver): one
  // pass over the pairs less. Else the derivatives, then the encounter kernel's
  // own pass over the pairs.
  void encounter_features(const at::Tensor& pos, const at::Tensor& vel, const at::Tensor& mass,
                          double softening, double G, double clip, bool smooth,
                          at::Tensor& feats, at::Tensor& times) const override {
    at::Tensor acc = at::empty_like(pos), jerk = at::empty_like(pos);
    at::Tensor snap = at::empty_like(pos), crackle = at::empty_like(pos);
    std::vector<encounter_kernels::PairTimes> pairs;
    const bool fused =  // more than 64 bodies: never the few-body kernels
        pos.scalar_type() == at::kDouble && aarseth_kernels::RowBlocks(pos.size(1)).nb > 1;
    if (fused) {
      const at::Tensor v = to_soa(vel);
      with_system(pos, mass, softening, G, [&](const auto& s, auto dim) {
        using T = Scalar<decltype(s)>;
        if constexpr (std::is_same_v<T, double>) {
          encounter_kernels::PairTimesObserver obs(s.B, s.N);
          aarseth_kernels::derivatives<T, decltype(dim)::value>(
              s.x, v.data_ptr<T>(), s.mass, s.B, s.N, s.eps2, s.G, acc.data_ptr<T>(),
              jerk.data_ptr<T>(), snap.data_ptr<T>(), crackle.data_ptr<T>(), obs);
          for (int64_t b = 0; b < s.B; ++b) pairs.push_back(obs.system(b, G));
        }
      });
    } else if (acc.numel() > 0) {
      aarseth_derivatives(pos, vel, mass, softening, G, acc, jerk, snap, crackle);
    }
    const at::Tensor v = vel.contiguous();
    with_system_aos(pos, mass, softening, G, [&](const auto& s, auto dim) {
      using T = Scalar<decltype(s)>;
      const encounter_kernels::Inputs in{s.B, s.N, softening * softening, G, clip,
                                         double(std::numeric_limits<T>::min()), smooth};
      encounter_kernels::features<T, decltype(dim)::value>(
          s.x, v.data_ptr<T>(), s.mass, acc.data_ptr<T>(), jerk.data_ptr<T>(), snap.data_ptr<T>(),
          crackle.data_ptr<T>(), in, feats.data_ptr<T>(), times.data_ptr<T>(),
          fused ? pairs.data() : nullptr);
    });
  }

  void history_encounter_features(const at::Tensor& pos, const at::Tensor& vel,
                                  const at::Tensor& mass, const std::vector<at::Tensor>& accs,
                                  const std::vector<at::Tensor>& times, double softening, double G,
                                  double clip, at::Tensor& feats, at::Tensor& tau,
                                  at::Tensor& ready) const override {
    const at::Tensor v = vel.contiguous();
    with_system_aos(pos, mass, softening, G, [&](const auto& s, auto dim) {
      using T = Scalar<decltype(s)>;
      std::vector<const T*> a;
      std::vector<const double*> t;
      for (size_t k = 0; k < accs.size(); ++k) {
        a.push_back(accs[k].data_ptr<T>());
        t.push_back(times[k].data_ptr<double>());
      }
      const history_kernels::Inputs in{s.B, s.N, static_cast<int64_t>(accs.size()) - 1,
                                       softening * softening, G, clip,
                                       double(std::numeric_limits<T>::min())};
      history_kernels::features<T, decltype(dim)::value>(s.x, v.data_ptr<T>(), s.mass, a, t, in,
                                                         feats.data_ptr<T>(), tau.data_ptr<T>(),
                                                         ready.data_ptr<bool>());
    });
  }

  // The features of every system (history_kernels::features), then the network
  // on kLanes systems at a time (lane_net: each weight read once per group).
  void history_model_dt(const at::Tensor& pos, const at::Tensor& vel, const at::Tensor& mass,
                        const std::vector<at::Tensor>& accs, const std::vector<at::Tensor>& times,
                        double softening, double G, double clip,
                        const std::vector<at::Tensor>& layers, NetActivation activation,
                        double net_scale, at::Tensor& dt, at::Tensor& ready) const override {
    const int64_t B = pos.size(0);
    at::Tensor feats = at::empty({B, kHistoryEncounterFeatures}, pos.options());
    at::Tensor tau = at::empty({B}, pos.options());
    history_encounter_features(pos, vel, mass, accs, times, softening, G, clip, feats, tau, ready);
    const lane_net::Net net = native_net(layers, activation, net_scale);
    AT_DISPATCH_FLOATING_TYPES(pos.scalar_type(), "history_model_dt", [&] {
      const scalar_t* f = feats.data_ptr<scalar_t>();
      const scalar_t* t = tau.data_ptr<scalar_t>();
      scalar_t* out = dt.data_ptr<scalar_t>();
      std::vector<lanes::F64> x(kHistoryEncounterFeatures + 2 * net.width);
      for (int64_t b0 = 0; b0 < B; b0 += lanes::kLanes) {
        const int64_t n = std::min<int64_t>(lanes::kLanes, B - b0);
        for (int k = 0; k < kHistoryEncounterFeatures; ++k) {
          for (int l = 0; l < lanes::kLanes; ++l) {
            x[k][l] = l < n ? double(f[(b0 + l) * kHistoryEncounterFeatures + k]) : 0.0;
          }
        }
        const lanes::F64 z = lane_net::forward(net, x.data(), x.data() + kHistoryEncounterFeatures);
        for (int64_t l = 0; l < n; ++l) out[b0 + l] = static_cast<scalar_t>(z[l] * double(t[b0 + l]));
      }
    });
  }

  void pair_statistics(const at::Tensor& pos, const at::Tensor& mass, double softening, double G,
                       bool freefall, at::Tensor& stats) const override {
    with_system(pos, mass, softening, G, [&](const auto& s, auto dim) {
      using T = Scalar<decltype(s)>;
      constexpr int D = decltype(dim)::value;
      auto run = freefall ? pair_statistics_kernel<T, D, true> : pair_statistics_kernel<T, D, false>;
      run(s.x, s.mass, s.B, s.N, s.eps2, s.G, stats.data_ptr<T>());
    });
  }
};

const CpuBackend cpu_backend;
const bool registered = (register_backend(c10::DeviceType::CPU, &cpu_backend), true);

}  // namespace
}  // namespace aits
