// The encounter-history features of aits.encounter_history on the CPU, one system
// at a time: O(N) from the accelerations of the current state and of the last K
// states (no pass over the pairs), what the Python path computes with some hundred
// small torch ops per call. The jerk, snap and crackle of each body are the first
// three derivatives at the current time of the polynomial through the K + 1
// accelerations (Newton's divided differences, nodes from the newest back, in one
// table for every coordinate of the system, vectorised over them); then
// Aarseth's per-body times, their sums over the bodies, the virial W = sum_i m_i
// (x_i - x_com) . a_i in place of the potential energy, and the eleven log ratios
// (HISTORY_ENCOUNTER_NAMES). Arithmetic in float64 whatever the input dtype (the
// torch path differences in the state's dtype: the two agree to rounding in
// float64, the kernel multiplying by the reciprocals of the time differences); the
// outputs are cast back. aits/encounter_history.py is the reference
// and gives every definition.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <ATen/Parallel.h>

#include "backend.h"
#include "cpu/encounter_kernels.h"

namespace aits {
namespace history_kernels {

constexpr int kFeatures = kHistoryEncounterFeatures;

// The most nodes (K + 1) a window may have (ops.cpp checks it).
constexpr int kMaxNodes = kHistoryMaxNodes;
// The longest a window may span, in Aarseth times (aits.encounter_history.MAX_SPAN):
// beyond it the polynomial through the accelerations is no derivative any more.
constexpr double kMaxSpan = 1.0;

struct Inputs {
  int64_t B, N, K;          // K past states: K + 1 nodes
  double G, clip, tiny;     // tiny: the smallest normal number of the input dtype
};

// The jerk, snap and crackle at t[0] of the n coordinates whose values at the
// K + 1 nodes are acc[k][0, n) at times t[k] (strictly decreasing): the
// derivatives of Newton's interpolating polynomial, its divided-difference table
// built in table ((K + 1) n doubles of scratch) level by level in place,
// vectorised over the coordinates.
template <typename T>
void difference_derivatives(const T* const* acc, const double* t, int64_t n, int64_t K,
                            double* table, double* jerk, double* snap, double* crackle) {
  // the Newton basis omega_k(tau) = prod_{q<k} (tau - r_q), r_q = t_q - t_0: its
  // Taylor coefficients of tau^1..tau^3 for every k (the same for every
  // coordinate), and the reciprocals of the denominators r_q - r_{q+level}
  double r[kMaxNodes], w1[kMaxNodes], w2[kMaxNodes], w3[kMaxNodes], inv[kMaxNodes * kMaxNodes];
  for (int64_t k = 0; k <= K; ++k) r[k] = t[k] - t[0];
  double o0 = 1.0, o1 = 0.0, o2 = 0.0, o3 = 0.0;
  for (int64_t k = 1; k <= K; ++k) {
    const double q = r[k - 1];
    o3 = o2 - q * o3;
    o2 = o1 - q * o2;
    o1 = o0 - q * o1;
    o0 = -q * o0;
    w1[k] = o1, w2[k] = o2, w3[k] = o3;
    for (int64_t i = 0; i + k <= K; ++i) inv[k * kMaxNodes + i] = 1.0 / (r[i] - r[i + k]);
  }
  for (int64_t k = 0; k <= K; ++k) {
    for (int64_t e = 0; e < n; ++e) table[k * n + e] = double(acc[k][e]);
  }
  for (int64_t e = 0; e < n; ++e) jerk[e] = snap[e] = crackle[e] = 0.0;
  for (int64_t level = 1; level <= K; ++level) {
    for (int64_t q = 0; q + level <= K; ++q) {
      double* __restrict lo = &table[q * n];
      const double* __restrict hi = &table[(q + 1) * n];
      const double f = inv[level * kMaxNodes + q];
      for (int64_t e = 0; e < n; ++e) lo[e] = (lo[e] - hi[e]) * f;
    }
    const double* __restrict d = &table[0];
    const double c1 = w1[level], c2 = 2.0 * w2[level], c3 = 6.0 * w3[level];
    for (int64_t e = 0; e < n; ++e) {
      jerk[e] += d[e] * c1;
      snap[e] += d[e] * c2;
      crackle[e] += d[e] * c3;
    }
  }
}

// One system's features (kFeatures) and Aarseth's minimum time from x, v (N, D),
// m (N), the state's acceleration a_state (N, D; the virial's) and the
// acceleration, jerk, snap and crackle a, j, s, c (N, D; j, s, c in T or double)
// that Aarseth's times take.
template <typename T, typename U, int D>
void features_from(const T* x, const T* v, const T* m, const T* a_state, const T* a, const U* j,
                   const U* s, const U* c, const Inputs& in, T* feats, T* tau_out) {
  using encounter_kernels::log_ratio;
  constexpr double inf = std::numeric_limits<double>::infinity();
  const int64_t N = in.N;
  const double clip = in.clip, tiny = in.tiny;
  const encounter_kernels::MassStats mass = encounter_kernels::mass_stats(m, N);
  const double M = mass.M;
  if (!(M > 0)) {  // no mass (a padded slot): features 0, no time limit
    for (int k = 0; k < kFeatures; ++k) feats[k] = T(0);
    *tau_out = T(inf);
    return;
  }
  const auto norm = [](const auto* p, int64_t i) {
    double sq = 0.0;
    for (int d = 0; d < D; ++d) sq += double(p[i * D + d]) * double(p[i * D + d]);
    return std::sqrt(sq);
  };
  encounter_kernels::AarsethSums sums;  // per body: |a|, |j|, |s|, |c|, Aarseth's time
  for (int64_t i = 0; i < N; ++i) sums.add(norm(a, i), norm(j, i), norm(s, i), norm(c, i));
  const double tau_min = sums.tau_min;
  // the kinetic energy and the virial in the centre-of-mass frame
  const double kin = encounter_kernels::com_kinetic<T, D>(v, m, N, M);
  double xcom[D];
  encounter_kernels::mass_mean<T, D>(x, m, N, M, xcom);
  double virial = 0.0;
  for (int64_t i = 0; i < N; ++i) {
    double xa = 0.0;
    for (int d = 0; d < D; ++d) {
      xa += (double(x[i * D + d]) - xcom[d]) * double(a_state[i * D + d]);
    }
    virial += double(m[i]) * xa;
  }
  const double E = kin + virial;
  const double t_energy = E != 0 ? in.G * std::pow(M, 2.5) / std::pow(2 * std::abs(E), 1.5) : inf;
  double smooth[6];
  sums.smooth_columns(clip, tiny, smooth);
  const double out[kFeatures] = {
      std::log(double(std::max<int64_t>(N, 1))),
      log_ratio(tau_min, t_energy, clip, tiny),
      log_ratio(sums.gmean(), tau_min, clip, tiny),
      smooth[0], smooth[1], smooth[2], smooth[3], smooth[4], smooth[5],
      log_ratio(2 * kin, std::abs(virial), clip, tiny),
      log_ratio(mass.m_min, mass.m_max, clip, tiny),
  };
  for (int k = 0; k < kFeatures; ++k) feats[k] = static_cast<T>(out[k]);
  *tau_out = static_cast<T>(tau_min);
}

// One system from its K + 1 nodes: x, v (N, D), m (N), acc[k] (N, D) the
// acceleration at node k (0 the current state, then back in time) and t[k] its
// time; scratch for (K + 4) N D doubles. Returns whether the window is usable:
// its times strictly decrease and it spans at most kMaxSpan of the Aarseth time
// its differences give (else feats and tau are not to be used: the caller takes
// the exact derivatives).
template <typename T, int D>
bool system_features(const T* x, const T* v, const T* m, const T* const* acc, const double* t,
                     const Inputs& in, double* scratch, T* feats, T* tau) {
  for (int64_t k = 0; k < in.K; ++k) {
    if (!(t[k] > t[k + 1])) return false;
  }
  const int64_t n = in.N * D;
  double* jerk = scratch + (in.K + 1) * n;
  double* snap = jerk + n;
  double* crackle = snap + n;
  difference_derivatives<T>(acc, t, n, in.K, scratch, jerk, snap, crackle);
  features_from<T, double, D>(x, v, m, acc[0], acc[0], jerk, snap, crackle, in, feats, tau);
  return t[0] - t[in.K] <= kMaxSpan * double(*tau);
}

// Every system of the batch: x, v (B, N, D), m (B, N), acc[k] (B, N, D) and
// t[k] (B,) float64 for the K + 1 nodes; feats (B, kFeatures), tau (B) and
// ready (B), system_features' verdict.
template <typename T, int D>
void features(const T* x, const T* v, const T* m, const std::vector<const T*>& acc,
              const std::vector<const double*>& t, const Inputs& in, T* feats, T* tau,
              bool* ready) {
  const int64_t stride = in.N * D;
  at::parallel_for(0, in.B, 16, [&](int64_t begin, int64_t end) {
    std::vector<const T*> a(acc.size());
    std::vector<double> times(t.size()), scratch((in.K + 4) * stride);
    for (int64_t b = begin; b < end; ++b) {
      for (size_t k = 0; k < acc.size(); ++k) {
        a[k] = acc[k] + b * stride;
        times[k] = t[k][b];
      }
      ready[b] = system_features<T, D>(x + b * stride, v + b * stride, m + b * in.N, a.data(),
                                       times.data(), in, scratch.data(), feats + b * kFeatures,
                                       tau + b);
    }
  });
}

}  // namespace history_kernels
}  // namespace aits
