// Pair-interaction math shared by the CPU and CUDA kernels.
//
// Conventions (one system, bodies i and j):
//   d_ij  = x_j - x_i                       separation vector
//   s_ij  = sqrt(|d_ij|^2 + eps^2)          softened distance
//   a_i   = G sum_{j != i} m_j d_ij / s_ij^3
//   phi_i = -G sum_{j != i} m_j / s_ij       (potential per unit mass)
//   U     = -G sum_{i < j} m_i m_j / s_ij = 1/2 sum_i m_i phi_i
//
// Backward of the accelerations for a loss L with upstream g_i = dL/da_i:
//   dL/dx_k = G sum_{j != k} K_kj (m_k g_j - m_j g_k),  K v = v/s^3 - 3 d (d.v)/s^5
//   dL/dm_k = G sum_{j != k} g_j . (x_k - x_j) / s_kj^3
// Both are O(N) per body with O(1) state: no N x N buffer exists anywhere.
#pragma once

#if defined(__CUDACC__)
#define AITS_HD __host__ __device__ __forceinline__
#else
#define AITS_HD inline __attribute__((always_inline))
#endif

#if !defined(__CUDACC__)
#include <cmath>
#endif


namespace aits {

#if defined(__CUDA_ARCH__)
// GPU reciprocal square roots. float: the flush-to-zero form is a single
// MUFU.RSQ; the default one wraps it in a 3-instruction fix-up for r2 below
// 1.2e-38 (where 1/s^3 overflows float anyway), a sixth of the pair's cost.
__device__ __forceinline__ float device_rsqrt(float x) {
  float y;
  asm("rsqrt.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ double device_rsqrt(double x) { return rsqrt(x); }
#endif

// 1 / sqrt(r2), the softened inverse distance.
template <typename T>
AITS_HD T inverse_distance(T r2) {
#if defined(__CUDA_ARCH__)
  return device_rsqrt(r2);
#else
  return T(1) / std::sqrt(r2);
#endif
}

// A separation or gradient vector; z is 0 in 2-D (constant-folded by the
// compiler, so 2-D kernels do no work for it).
template <typename T>
struct Vec3 {
  T x, y, z;
};

template <typename T>
AITS_HD T dot(const Vec3<T>& a, const Vec3<T>& b) {
  return a.x * b.x + a.y * b.y + a.z * b.z;
}

// Body j's pull on body i at squared softened distance r2 = |d_ij|^2 + eps^2, in
// the range-safe form every kernel (CPU and CUDA) uses: returns m_j / s^2
// and sets inv = 1 / s and pot = m_j / s; the acceleration term is
// (m_j / s^2) (d_ij inv). No 1 / s^3 is formed, so the term overflows or
// underflows only where m_j / s^2 does (float32: 1 / s^3 overflows below
// s = 7e-14 and underflows above s = 4e12, long before the result does).
template <typename T>
AITS_HD T pull_scale(T r2, T mj, T& inv, T& pot) {
  inv = inverse_distance(r2);
  pot = mj * inv;
  return pot * inv;
}

// Pair (k, j)'s share of dL/dx_k (returned) and dL/dm_k (added to gm), G
// applied by the caller; d = x_j - x_k; gk, gj: upstream dL/da of k and j. In the
// range-safe form: with e = d / s,
// K u = (u - 3 e (e.u)) / s^3 and g_j.d / s^3 = (g_j.e) / s^2.
template <typename T>
AITS_HD Vec3<T> pull_backward_scaled(const Vec3<T>& d, T r2, T mk, T mj, const Vec3<T>& gk,
                                     const Vec3<T>& gj, T& gm) {
  const T inv = inverse_distance(r2);
  const T inv2 = inv * inv;
  const T inv3 = inv2 * inv;
  const Vec3<T> e{d.x * inv, d.y * inv, d.z * inv};
  const Vec3<T> u{mk * gj.x - mj * gk.x, mk * gj.y - mj * gk.y, mk * gj.z - mj * gk.z};
  const T t3 = T(3) * dot(e, u);
  gm -= dot(e, gj) * inv2;
  return {inv3 * (u.x - e.x * t3), inv3 * (u.y - e.y * t3), inv3 * (u.z - e.z * t3)};
}

// Aarseth's criterion: the acceleration and its first three time derivatives
// (jerk, snap, crackle) of every body, as pair sums (Nitadori & Makino 2008,
// eqs. 22-25). For the pair (i, j): x, v, a, k the relative (j minus i)
// position, velocity, acceleration and jerk (a and k of the bodies, G
// included), s^2 = |x|^2 + eps^2, inv = 1 / s, w = m_j / s^3, and
//   alpha = x.v / s^2,  beta = (v.v + x.a) / s^2 + alpha^2,
//   gamma = (3 v.a + x.k) / s^2 + alpha (3 beta - 4 alpha^2),
//   A = w x,  J = w v - 3 alpha A,  S = w a - 6 alpha J - 3 beta A,
//   C = w k - 9 alpha S - 9 beta J - 3 gamma A
// are j's shares of body i's acc, jerk, snap and crackle. Substituting A and J:
//   J = w (v - 3 alpha x),
//   S = w (a - 6 alpha v + (18 alpha^2 - 3 beta) x),
//   C = w (k - 9 alpha a + 3 (18 alpha^2 - 3 beta) v
//          + (alpha (45 beta - 150 alpha^2) - 3 g) x),   g = (3 v.a + x.k) / s^2.
// The functions below return the mass-free terms t = (...) and 1 / s^3: the
// share is (m_j / s^3) t, and body j gets -(m_i / s^3) t from the same pair
// (every term is odd in (x, v, a, k) with even coefficients). 1 / s^3 is
// formed, unlike in pull_scale: the derivatives scale up to crackle ~ m v^3 / s^5,
// which overflows long before 1 / s^3 does. Every term is linear in G once a
// and k include it: the sums are scaled by G at the end.
// V is T (CUDA) or a SIMD vector of T (CPU); D = 2 or 3 components.

template <int D, typename V>
AITS_HD V dot_n(const V (&a)[D], const V (&b)[D]) {
  V s = a[0] * b[0];
  for (int c = 1; c < D; ++c) s += a[c] * b[c];
  return s;
}

// Pass 1: acc and jerk terms tA = x, tJ of a pair; returns 1 / s^3.
template <int D, typename T, typename V>
AITS_HD V aarseth_acc_jerk_terms(const V (&x)[D], const V (&v)[D], V inv, V (&tA)[D],
                                 V (&tJ)[D]) {
  const V inv2 = inv * inv;
  const V alpha3 = T(3) * (dot_n<D>(x, v) * inv2);
  for (int c = 0; c < D; ++c) {
    tA[c] = x[c];
    tJ[c] = v[c] - alpha3 * x[c];
  }
  return inv2 * inv;
}

// Pass 2: snap and crackle terms tS, tC of a pair (a and k from pass 1); returns 1 / s^3.
template <int D, typename T, typename V>
AITS_HD V aarseth_snap_crackle_terms(const V (&x)[D], const V (&v)[D], const V (&a)[D],
                                     const V (&k)[D], V inv, V (&tS)[D], V (&tC)[D]) {
  const V inv2 = inv * inv;
  const V alpha = dot_n<D>(x, v) * inv2;
  const V alpha2 = alpha * alpha;
  const V beta = (dot_n<D>(v, v) + dot_n<D>(x, a)) * inv2 + alpha2;
  const V g = (T(3) * dot_n<D>(v, a) + dot_n<D>(x, k)) * inv2;
  const V s_v = T(-6) * alpha;
  const V s_x = T(18) * alpha2 - T(3) * beta;
  const V c_a = T(-9) * alpha;
  const V c_v = T(3) * s_x;
  const V c_x = alpha * (T(45) * beta - T(150) * alpha2) - T(3) * g;
  for (int c = 0; c < D; ++c) {
    tS[c] = a[c] + s_v * v[c] + s_x * x[c];
    tC[c] = k[c] + c_a * a[c] + c_v * v[c] + c_x * x[c];
  }
  return inv2 * inv;
}

}  // namespace aits
