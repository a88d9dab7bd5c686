// The encounter-history features of aits.encounter_history on the CPU, one system
// at a time: O(N) from the accelerations of the current state and of the last K
// states (no pass over the pairs), what the Python path computes with some hundred
// small torch ops per call. The jerk, snap and crackle of each body are the first
// three derivatives at the current time of the polynomial through the K + 1
// accelerations (Newton's divided differences, nodes from the newest back, in one
// table for every coordinate of the system, vectorised over them); then
// Aarseth's per-body times, their sums over the bodies, the virial W = sum_i m_i
// (x_i - x_com) . a_i in place of the potential energy, and the eleven log ratios
// (HISTORY_ENCOUNTER_NAMES). A body whose Aarseth time from the differences is
// shorter than the window's span (kMaxSpan) takes its exact derivatives instead,
// one pass over its partners each for the jerk and for the snap and crackle (the
// partners' jerks: the exact ones of such bodies, the differences' of the others):
// O(N) for each such body. Arithmetic in float64 whatever the input dtype (the
// torch path differences in the state's dtype: the two agree to rounding in
// float64, the kernel multiplying by the reciprocals of the time differences); the
// outputs are cast back. aits/encounter_history.py is the reference
// and gives every definition.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include <ATen/Parallel.h>

#include "backend.h"
#include "cpu/encounter_kernels.h"
#include "cpu/simd.h"
#include "gravity.h"

namespace aits {
namespace history_kernels {

constexpr int kFeatures = kHistoryEncounterFeatures;

// The most nodes (K + 1) a window may have (ops.cpp checks it).
constexpr int kMaxNodes = kHistoryMaxNodes;
// The longest a window may span, in Aarseth times (aits.encounter_history.MAX_SPAN):
// beyond it the polynomial through a body's accelerations is no derivative any more.
constexpr double kMaxSpan = 1.0;

struct Inputs {
  int64_t B, N, K;             // K past states: K + 1 nodes
  double eps2, G, clip, tiny;  // tiny: the smallest normal number of the input dtype
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

// |p_i| of a body's D-vector.
template <int D, typename P>
double norm(const P* p, int64_t i) {
  double sq = 0.0;
  for (int d = 0; d < D; ++d) sq += double(p[i * D + d]) * double(p[i * D + d]);
  return std::sqrt(sq);
}

// One system's features (kFeatures) and Aarseth's minimum time from x, v (N, D),
// m (N), the state's acceleration a_state (N, D; the virial's) and the sums over
// its bodies of Aarseth's ingredients.
template <typename T, int D>
void features_from_sums(const T* x, const T* v, const T* m, const T* a_state,
                        const encounter_kernels::AarsethSums& sums, const Inputs& in, T* feats,
                        T* tau_out) {
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

// features_from_sums from the acceleration, jerk, snap and crackle a, j, s, c
// (N, D; j, s, c in T or double) that Aarseth's times take.
template <typename T, typename U, int D>
void features_from(const T* x, const T* v, const T* m, const T* a_state, const T* a, const U* j,
                   const U* s, const U* c, const Inputs& in, T* feats, T* tau_out) {
  encounter_kernels::AarsethSums sums;
  for (int64_t i = 0; i < in.N; ++i) {
    sums.add(norm<D>(a, i), norm<D>(j, i), norm<D>(s, i), norm<D>(c, i));
  }
  features_from_sums<T, D>(x, v, m, a_state, sums, in, feats, tau_out);
}

// The exact jerk, snap and crackle (double (N, D), in place) of the bodies whose
// Aarseth time from jerk, snap and crackle (the differences') is shorter than
// span / kMaxSpan, from x, v (N, D), m (N) and the state's acceleration a (N, D):
// the pair sums of aits.reference.aarseth_derivatives over every partner, the
// jerk first, then the snap and crackle from the accelerations and the partners'
// jerks (the exact ones of the bodies replaced, the differences' of the others).
// The partners go W at a time through vector lanes (one simd::rsqrt per pair,
// from body arrays copied to (D, Np), zero-padded). norms (N, 4): every body's
// |a|, |j|, |s|, |c|, those of the bodies replaced updated; rows: scratch for N
// indices.
template <typename T, int D>
void resolve_bodies(const T* x, const T* v, const T* m, const T* a, double span, const Inputs& in,
                    double* jerk, double* snap, double* crackle, double* norms, int64_t* rows) {
  using simd::Vec;
  using Mask = simd::Mask<double>;
  constexpr int64_t W = simd::Traits<double>::W;
  const int64_t N = in.N;
  int64_t n_rows = 0;
  for (int64_t i = 0; i < N; ++i) {
    double* nb = norms + 4 * i;
    nb[0] = norm<D>(a, i), nb[1] = norm<D>(jerk, i), nb[2] = norm<D>(snap, i);
    nb[3] = norm<D>(crackle, i);
    if (!(span <= kMaxSpan * encounter_kernels::aarseth_time(nb[0], nb[1], nb[2], nb[3]))) {
      rows[n_rows++] = i;
    }
  }
  if (n_rows == 0) return;
  // (D, Np) copies of x, v, a and the partners' jerks, and the masses (Np)
  const int64_t Np = (N + W - 1) / W * W;
  std::vector<double> soa((4 * D + 1) * Np, 0.0);
  double *xs = soa.data(), *vs = xs + D * Np, *as = vs + D * Np, *js = as + D * Np,
         *ms = js + D * Np;
  for (int64_t i = 0; i < N; ++i) {
    for (int c = 0; c < D; ++c) {
      xs[c * Np + i] = double(x[i * D + c]);
      vs[c * Np + i] = double(v[i * D + c]);
      as[c * Np + i] = double(a[i * D + c]);
      js[c * Np + i] = jerk[i * D + c];
    }
    ms[i] = double(m[i]);
  }
  Mask index;  // the lanes' offsets 0 .. W - 1
  for (int l = 0; l < W; ++l) index[l] = l;
  // the W pairs (i, j..j + W) of body i: relative vectors of the first K inputs
  // (x, v, a, jerk), 1 / s, and the lanes that are partners (j != i, j < N)
  const auto pairs = [&](int64_t i, int64_t j, auto& rel, Vec<double>& inv, Mask& mask) {
    constexpr int K = std::extent_v<std::remove_reference_t<decltype(rel)>>;
    const double* cols[4] = {xs, vs, as, js};
    for (int k = 0; k < K; ++k) {
      for (int c = 0; c < D; ++c) {
        rel[k][c] = simd::load(cols[k] + c * Np + j) - cols[k][c * Np + i];
      }
    }
    const Mask at = index + j;
    mask = (at < N) & (at != i);
    Vec<double> r2 = in.eps2 + rel[0][0] * rel[0][0];
    for (int c = 1; c < D; ++c) r2 += rel[0][c] * rel[0][c];
    inv = simd::rsqrt(mask ? r2 : simd::broadcast<double>(1.0));
  };
  for (int64_t r = 0; r < n_rows; ++r) {
    const int64_t i = rows[r];
    Vec<double> J[D] = {};
    for (int64_t j = 0; j < Np; j += W) {
      Vec<double> rel[2][D], inv, tA[D], tJ[D];
      Mask mask;
      pairs(i, j, rel, inv, mask);
      const Vec<double> inv3 = aarseth_acc_jerk_terms<D, double>(rel[0], rel[1], inv, tA, tJ);
      const Vec<double> q = mask ? simd::load(ms + j) * inv3 : Vec<double>{};
      for (int c = 0; c < D; ++c) J[c] += q * tJ[c];
    }
    for (int c = 0; c < D; ++c) jerk[i * D + c] = in.G * simd::sum_lanes<double>(J[c]);
  }
  for (int64_t r = 0; r < n_rows; ++r) {  // the partners' jerks: the replaced ones exact
    for (int c = 0; c < D; ++c) js[c * Np + rows[r]] = jerk[rows[r] * D + c];
  }
  for (int64_t r = 0; r < n_rows; ++r) {
    const int64_t i = rows[r];
    Vec<double> S[D] = {}, C[D] = {};
    for (int64_t j = 0; j < Np; j += W) {
      Vec<double> rel[4][D], inv, tS[D], tC[D];
      Mask mask;
      pairs(i, j, rel, inv, mask);
      const Vec<double> inv3 =
          aarseth_snap_crackle_terms<D, double>(rel[0], rel[1], rel[2], rel[3], inv, tS, tC);
      const Vec<double> q = mask ? simd::load(ms + j) * inv3 : Vec<double>{};
      for (int c = 0; c < D; ++c) {
        S[c] += q * tS[c];
        C[c] += q * tC[c];
      }
    }
    for (int c = 0; c < D; ++c) {
      snap[i * D + c] = in.G * simd::sum_lanes<double>(S[c]);
      crackle[i * D + c] = in.G * simd::sum_lanes<double>(C[c]);
    }
    norms[4 * i + 1] = norm<D>(jerk, i), norms[4 * i + 2] = norm<D>(snap, i);
    norms[4 * i + 3] = norm<D>(crackle, i);
  }
}

// One system from its K + 1 nodes: x, v (N, D), m (N), acc[k] (N, D) the
// acceleration at node k (0 the current state, then back in time) and t[k] its
// time; scratch for (K + 4) N D doubles and N indices. Returns whether the window
// is usable: its times strictly decrease (else feats and tau are not to be used:
// the caller takes the exact derivatives). The bodies it does not resolve take
// their exact derivatives (resolve_bodies).
template <typename T, int D>
bool system_features(const T* x, const T* v, const T* m, const T* const* acc, const double* t,
                     const Inputs& in, double* scratch, int64_t* rows, T* feats, T* tau) {
  for (int64_t k = 0; k < in.K; ++k) {
    if (!(t[k] > t[k + 1])) return false;
  }
  const int64_t n = in.N * D;
  double* jerk = scratch + (in.K + 1) * n;
  double* snap = jerk + n;
  double* crackle = snap + n;
  difference_derivatives<T>(acc, t, n, in.K, scratch, jerk, snap, crackle);
  double* norms = scratch;  // the table is spent: (K + 1) N D >= 4 N doubles
  resolve_bodies<T, D>(x, v, m, acc[0], t[0] - t[in.K], in, jerk, snap, crackle, norms, rows);
  encounter_kernels::AarsethSums sums;
  for (int64_t i = 0; i < in.N; ++i) {
    sums.add(norms[4 * i], norms[4 * i + 1], norms[4 * i + 2], norms[4 * i + 3]);
  }
  features_from_sums<T, D>(x, v, m, acc[0], sums, in, feats, tau);
  return true;
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
    std::vector<int64_t> rows(in.N);
    for (int64_t b = begin; b < end; ++b) {
      for (size_t k = 0; k < acc.size(); ++k) {
        a[k] = acc[k] + b * stride;
        times[k] = t[k][b];
      }
      ready[b] = system_features<T, D>(x + b * stride, v + b * stride, m + b * in.N, a.data(),
                                       times.data(), in, scratch.data(), rows.data(),
                                       feats + b * kFeatures,
                                       tau + b);
    }
  });
}

}  // namespace history_kernels
}  // namespace aits
