// The "rsqrt" pair kernels: accelerations (and potential) forward and the
// backward of the accelerations, with the inverse distance from simd::rsqrt
// (no square root or division per pair; AVX2 builds share the work with the
// divider, below). One thread owns each body's row;
// partners are processed W at a time in vector lanes, the lanes summed in a
// fixed order: deterministic for any thread count.
//
// Range: the pair term is formed as (m / s^2) (d / s), never via 1 / s^3, so
// it overflows or underflows only where m / s^2 itself does (gravity.h).
#pragma once

#include <algorithm>
#include <limits>
#include <type_traits>

#include <ATen/Parallel.h>

#include "cpu/simd.h"

namespace aits {
namespace rsqrt_kernels {

using simd::broadcast;
using simd::load;
using simd::load_partial;
using simd::Vec;

// Coordinate rows of one system in (D, N) layout; z unused in 2-D.
template <typename T, int D>
struct Rows {
  const T* x;
  const T* y;
  const T* z;
  Rows(const T* base, int64_t N) : x(base), y(base + N), z(D == 3 ? base + 2 * N : nullptr) {}
};

// Calls block(j, n, tail, divider) for the partners [j0, j1) in groups of W
// starting at j: full groups (n = W, tail false), then one partial group
// (n < W, tail true) whose lanes at or past n hold padding that the block must
// drop. `divider` says where the group's inverse distances come from: true the
// divider (simd::inv_sqrt_divide), false the estimate (simd::rsqrt); kDivider
// is kNever, kAlways, or kAlternate (every other full group: the divider then
// works beside the FMA units, which the estimate keeps busy). Which group takes
// which depends on j alone, so results stay the same for any thread count.
enum class Divider { kNever, kAlways, kAlternate };

template <typename T, Divider kDivider, typename Block>
AITS_SIMD void for_partner_blocks(int64_t j0, int64_t j1, const Block& block) {
  constexpr int W = simd::Traits<T>::W;
  using Full = std::false_type;
  using Tail = std::true_type;
  using Div = std::bool_constant<kDivider == Divider::kAlways>;
  int64_t j = j0;
  if constexpr (kDivider == Divider::kAlternate) {
    for (; j + 2 * W <= j1; j += 2 * W) {
      block(j, W, Full{}, std::true_type{});
      block(j + W, W, Full{}, std::false_type{});
    }
  }
  for (; j + W <= j1; j += W) block(j, W, Full{}, Div{});
  if (j < j1) block(j, static_cast<int>(j1 - j), Tail{}, Div{});
}

// AVX2 has no float64 estimate of its own and a divider that keeps pace with
// the FMA units: measured on an AVX-512 Xeon built for AVX2 (docs/benchmarks.md),
// the forward kernels are fastest alternating the two (1.47x the divide kernel
// in float64, against 1.08x for the estimate alone), the backward, whose
// arithmetic already hides the divider, through the divider alone. AVX-512
// builds take the estimate everywhere (alternating lost there: 1.9x against 2.2x).
#if defined(__AVX2__) && !defined(__AVX512F__)
constexpr Divider kForwardDivider = Divider::kAlternate;
constexpr Divider kBackwardDivider = Divider::kAlways;
#else
constexpr Divider kForwardDivider = Divider::kNever;
constexpr Divider kBackwardDivider = Divider::kNever;
#endif

template <typename T, bool kDiv>
AITS_SIMD Vec<T> inverse_distance(const Vec<T>& r2) {
  if constexpr (kDiv) {
    return simd::inv_sqrt_divide<T>(r2);
  } else {
    return simd::rsqrt(r2);
  }
}

// W values from p (tail: the first n, then zeros).
template <typename T, bool kTail>
AITS_SIMD Vec<T> load_lanes(const T* p, int n) {
  if constexpr (kTail) {
    return load_partial(p, n, T(0));
  } else {
    return load(p);
  }
}

// v in the lanes below n (tail), everywhere otherwise; 0 elsewhere.
template <typename T, bool kTail>
AITS_SIMD Vec<T> keep(const Vec<T>& v, int n) {
  if constexpr (kTail) {
    return simd::lanes_below<T>(n) ? v : Vec<T>{};
  } else {
    return v;
  }
}

template <typename T>
AITS_SIMD int64_t grain(int64_t n) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(n, 1));
}

// The pair statistics of one body's row (pairs i != j), as kStats below sums them.
enum RowStat { kMinS2, kSumS, kMaxS2, kMaxQ, kRowStats };

// With kStats (float64 only; a float32 q = (m_i + m_j) / s^3 would overflow), also
// the pair statistics (those of pair_statistics) from the same inverse distances,
// per body: rows[idx * kRowStats + RowStat] = min s^2, sum of s, max s^2 and max q
// over its partners j != i, s = s^2 / s (so a row with s^2 = 0, softening 0, gets a
// NaN sum: the caller recomputes such rows); the accelerations and potential are
// bit for bit those without kStats. About a
// third more work than the accelerations alone (docs/benchmarks.md).
template <typename T, int D, bool kAcc, bool kPhi, bool kStats = false>
void forward(const T* x, const T* mass, int64_t B, int64_t N, T eps2, T G, T* acc, T* phi,
             T* rows = nullptr) {
  static_assert(!kStats || std::is_same_v<T, double>, "the pair statistics need float64");
  constexpr T inf = std::numeric_limits<T>::infinity();
  at::parallel_for(0, B * N, grain<T>(N), [&](int64_t begin, int64_t end) {
    for (int64_t idx = begin; idx < end; ++idx) {
      const int64_t b = idx / N, i = idx % N;
      const Rows<T, D> r(x + b * D * N, N);
      const T* mb = mass + b * N;
      const T xi = r.x[i], yi = r.y[i], zi = D == 3 ? r.z[i] : T(0);
      Vec<T> ax{}, ay{}, az{}, ph{};
      Vec<T> s2_min = broadcast<T>(inf), s_sum{}, s2_max{}, q_max{};
      const auto block = [&](int64_t j, int n, auto tail, auto divider)
                             __attribute__((always_inline)) {
        constexpr bool kTail = decltype(tail)::value;
        constexpr bool kDiv = decltype(divider)::value;
        const Vec<T> dx = load_lanes<T, kTail>(r.x + j, n) - xi;
        const Vec<T> dy = load_lanes<T, kTail>(r.y + j, n) - yi;
        const Vec<T> dz = D == 3 ? load_lanes<T, kTail>(r.z + j, n) - zi : Vec<T>{};
        const Vec<T> mj = load_lanes<T, kTail>(mb + j, n);
        Vec<T> r2 = eps2 + dx * dx + dy * dy;
        if constexpr (D == 3) r2 += dz * dz;
        const Vec<T> inv = inverse_distance<T, kDiv>(r2);
        const Vec<T> pot = mj * inv;  // m / s
        if constexpr (kStats) {  // s = s^2 / s, q = freefall_weight
          const Vec<T> q = (((mb[i] + mj) * inv) * inv) * inv;
          const Vec<T> zero{};
          simd::Mask<T> live = zero == zero;  // every lane
          if constexpr (kTail) live = simd::lanes_below<T>(n);
          s2_min = (live && r2 < s2_min) ? r2 : s2_min;
          s_sum += keep<T, kTail>(r2 * inv, n);
          s2_max = (live && r2 > s2_max) ? r2 : s2_max;
          q_max = (live && q > q_max) ? q : q_max;
        }
        if constexpr (kAcc) {
          const Vec<T> w = pot * inv;  // m / s^2
          ax += keep<T, kTail>(w * (dx * inv), n);
          ay += keep<T, kTail>(w * (dy * inv), n);
          if constexpr (D == 3) az += keep<T, kTail>(w * (dz * inv), n);
        }
        if constexpr (kPhi) ph += keep<T, kTail>(pot, n);
      };
      for_partner_blocks<T, kForwardDivider>(0, i, block);
      for_partner_blocks<T, kForwardDivider>(i + 1, N, block);
      if constexpr (kAcc) {
        acc[idx * D + 0] = G * simd::sum_lanes<T>(ax);
        acc[idx * D + 1] = G * simd::sum_lanes<T>(ay);
        if constexpr (D == 3) acc[idx * D + 2] = G * simd::sum_lanes<T>(az);
      }
      if constexpr (kPhi) phi[idx] = -G * simd::sum_lanes<T>(ph);
      if constexpr (kStats) {
        T* row = rows + idx * kRowStats;
        row[kMinS2] = inf, row[kSumS] = simd::sum_lanes<T>(s_sum), row[kMaxS2] = 0, row[kMaxQ] = 0;
        for (int l = 0; l < simd::Traits<T>::W; ++l) {
          row[kMinS2] = std::min(row[kMinS2], s2_min[l]);
          row[kMaxS2] = std::max(row[kMaxS2], s2_max[l]);
          row[kMaxQ] = std::max(row[kMaxQ], q_max[l]);
        }
      }
    }
  });
}

// dL/dx_k = G sum_j K_kj (m_k g_j - m_j g_k) and dL/dm_k = -G sum_j g_j . d_kj / s^3
// (gravity.h), with K u = (1/s^3) (u - 3 e (e . u)) and e = d / s.
template <typename T, int D>
void backward(const T* x, const T* mass, const T* g, int64_t B, int64_t N, T eps2, T G,
              T* grad_pos, T* grad_mass) {
  at::parallel_for(0, B * N, grain<T>(N), [&](int64_t begin, int64_t end) {
    for (int64_t idx = begin; idx < end; ++idx) {
      const int64_t b = idx / N, k = idx % N;
      const Rows<T, D> r(x + b * D * N, N);
      const Rows<T, D> gr(g + b * D * N, N);
      const T* mb = mass + b * N;
      const T mk = mb[k];
      const T xk = r.x[k], yk = r.y[k], zk = D == 3 ? r.z[k] : T(0);
      const T gkx = gr.x[k], gky = gr.y[k], gkz = D == 3 ? gr.z[k] : T(0);
      Vec<T> sx{}, sy{}, sz{}, sm{};
      const auto block = [&](int64_t j, int n, auto tail, auto divider)
                             __attribute__((always_inline)) {
        constexpr bool kTail = decltype(tail)::value;
        constexpr bool kDiv = decltype(divider)::value;
        const Vec<T> dx = load_lanes<T, kTail>(r.x + j, n) - xk;
        const Vec<T> dy = load_lanes<T, kTail>(r.y + j, n) - yk;
        const Vec<T> dz = D == 3 ? load_lanes<T, kTail>(r.z + j, n) - zk : Vec<T>{};
        const Vec<T> mj = load_lanes<T, kTail>(mb + j, n);
        const Vec<T> gx = load_lanes<T, kTail>(gr.x + j, n);
        const Vec<T> gy = load_lanes<T, kTail>(gr.y + j, n);
        const Vec<T> gz = D == 3 ? load_lanes<T, kTail>(gr.z + j, n) : Vec<T>{};
        Vec<T> r2 = eps2 + dx * dx + dy * dy;
        if constexpr (D == 3) r2 += dz * dz;
        const Vec<T> inv = inverse_distance<T, kDiv>(r2);
        const Vec<T> inv2 = inv * inv;
        const Vec<T> inv3 = inv2 * inv;
        const Vec<T> ex = dx * inv, ey = dy * inv;
        const Vec<T> ez = D == 3 ? dz * inv : Vec<T>{};
        const Vec<T> ux = mk * gx - mj * gkx, uy = mk * gy - mj * gky;
        const Vec<T> uz = D == 3 ? mk * gz - mj * gkz : Vec<T>{};
        Vec<T> eu = ex * ux + ey * uy;
        Vec<T> eg = ex * gx + ey * gy;
        if constexpr (D == 3) {
          eu += ez * uz;
          eg += ez * gz;
        }
        const Vec<T> t3 = T(3) * eu;
        sx += keep<T, kTail>(inv3 * (ux - ex * t3), n);
        sy += keep<T, kTail>(inv3 * (uy - ey * t3), n);
        if constexpr (D == 3) sz += keep<T, kTail>(inv3 * (uz - ez * t3), n);
        sm -= keep<T, kTail>(inv2 * eg, n);
      };
      for_partner_blocks<T, kBackwardDivider>(0, k, block);
      for_partner_blocks<T, kBackwardDivider>(k + 1, N, block);
      grad_pos[idx * D + 0] = G * simd::sum_lanes<T>(sx);
      grad_pos[idx * D + 1] = G * simd::sum_lanes<T>(sy);
      if constexpr (D == 3) grad_pos[idx * D + 2] = G * simd::sum_lanes<T>(sz);
      grad_mass[idx] = G * simd::sum_lanes<T>(sm);
    }
  });
}

}  // namespace rsqrt_kernels
}  // namespace aits
