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

}  // namespace aits
